"""The two ways a user gets an image out of one ComfyUI, for bench/overhead.py.

``DirectClient`` is what a user writes instead of a dispatcher: its own websocket (one ``clientId``,
kept open), ``POST /prompt``, wait for ``executing`` with ``node: null``, ``/history``, then ``/view``
of every saved file. ``StackClient`` is the same job through Comfy Dispatch:
``POST /v1/workflows/invert/runs?wait=60``, then each output's bytes from the URL the run gives.
Both return the files' bytes, which the benchmark checks belong to their own run.
"""

from __future__ import annotations

import copy
import io
import json
import uuid
from pathlib import Path
from typing import Any

import requests
import websocket
from PIL import Image

INVERT_GRAPH: dict[str, Any] = json.loads(
    (Path(__file__).resolve().parent.parent / "workflows" / "invert" / "workflow.json").read_text()
)
SIZE = 64  # a 64x64 invert: about 2 ms of work in a real ComfyUI


class RunFailed(RuntimeError):
    pass


def invert_graph(color: int, prefix: str) -> dict[str, Any]:
    graph = copy.deepcopy(INVERT_GRAPH)
    graph["1"]["inputs"].update(width=SIZE, height=SIZE, color=color)
    graph["3"]["inputs"]["filename_prefix"] = prefix  # unique per run, as a careful user sets it
    return graph


def first_pixel(data: bytes) -> tuple[int, int, int]:
    with Image.open(io.BytesIO(data)) as image:
        r, g, b = image.convert("RGB").getpixel((0, 0))  # type: ignore[misc]
    return (r, g, b)


class DirectClient:
    """A hand-written ComfyUI client: one websocket for its whole life, one prompt at a time."""

    def __init__(self, base_url: str, *, timeout: float = 60.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.client_id = uuid.uuid4().hex
        self.session = requests.Session()
        self.timeout = timeout
        ws_url = self.base_url.replace("http://", "ws://", 1).replace("https://", "wss://", 1)
        self.ws = websocket.create_connection(
            f"{ws_url}/ws?clientId={self.client_id}", timeout=timeout, skip_utf8_validation=True
        )

    def close(self) -> None:
        self.ws.close()
        self.session.close()

    def run(self, color: int) -> tuple[str, list[bytes]]:
        prompt_id = str(uuid.uuid4())
        body = {
            "prompt": invert_graph(color, f"direct_{prompt_id}"),
            "client_id": self.client_id,
            "prompt_id": prompt_id,
        }
        reply = self.session.post(f"{self.base_url}/prompt", json=body, timeout=self.timeout)
        if reply.status_code != 200:
            raise RunFailed(f"POST /prompt: {reply.status_code} {reply.text[:200]}")
        while True:
            frame = self.ws.recv()
            if isinstance(frame, bytes):
                continue  # a preview
            message = json.loads(frame)
            data = message.get("data") or {}
            if data.get("prompt_id") != prompt_id:
                continue
            if message["type"] in ("execution_error", "execution_interrupted"):
                raise RunFailed(f"{message['type']}: {data}")
            if message["type"] == "executing" and data.get("node") is None:
                break
        entry = self.session.get(f"{self.base_url}/history/{prompt_id}", timeout=self.timeout).json()[prompt_id]
        files = []
        for output in entry["outputs"].values():
            for image in output.get("images", []):
                if image["type"] == "output":
                    view = self.session.get(f"{self.base_url}/view", params=image, timeout=self.timeout)
                    view.raise_for_status()
                    files.append(view.content)
        return prompt_id, files


class StackClient:
    """The same job through Comfy Dispatch's API, waiting for the run in the submitting request."""

    def __init__(self, api: str, api_key: str, *, timeout: float = 70.0) -> None:
        self.api = api.rstrip("/")
        self.session = requests.Session()
        self.session.headers["X-API-KEY"] = api_key
        self.timeout = timeout

    def close(self) -> None:
        self.session.close()

    def submit(self, color: int, *, wait: float = 0) -> dict[str, Any]:
        body = {"params": {"width": SIZE, "height": SIZE, "color": color}}
        params = {"wait": wait} if wait else None
        reply = self.session.post(
            f"{self.api}/v1/workflows/invert/runs", params=params, json=body, timeout=self.timeout
        )
        if reply.status_code not in (200, 202):
            raise RunFailed(f"POST runs: {reply.status_code} {reply.text[:300]}")
        view: dict[str, Any] = reply.json()
        return view

    def run(self, color: int) -> tuple[str, list[bytes]]:
        view = self.submit(color, wait=60)
        if view["status"] != "succeeded":
            raise RunFailed(f"run {view['id']} is {view['status']}: {view.get('error')}")
        files = []
        for output in view["outputs"]:
            data = self.session.get(output["url"], timeout=self.timeout)
            data.raise_for_status()
            files.append(data.content)
        return view["id"], files
