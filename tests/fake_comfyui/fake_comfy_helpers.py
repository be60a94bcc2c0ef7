"""Helpers of the fake ComfyUI contract tests: a small HTTP + websocket client and frame readers."""

from __future__ import annotations

import io
import json
import re
import time
import uuid
from pathlib import Path
from typing import Any

import requests
import websocket
from PIL import Image as PILImage

from dispatcher.fake_comfyui import BackgroundFake

TRANSCRIPTS = Path(__file__).resolve().parents[1] / "fixtures" / "transcripts"


def transcript(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((TRANSCRIPTS / f"{name}.json").read_text())
    return data


class Comfy:
    """A test client for one fake: HTTP through a session, websockets it closes at teardown."""

    def __init__(self, fake: BackgroundFake) -> None:
        self.fake = fake
        self.url = fake.url
        self.http = requests.Session()
        self._sockets: list[websocket.WebSocket] = []

    @property
    def dirs(self) -> Any:
        assert self.fake.state is not None
        return self.fake.state.dirs

    def close(self) -> None:
        for ws in self._sockets:
            try:
                ws.close(timeout=1)
            except (websocket.WebSocketException, OSError):
                pass  # already closed or cut by the server; shutdown() below still frees the socket
            ws.shutdown()
        self.http.close()

    def get(self, path: str, **kw: Any) -> requests.Response:
        return self.http.get(self.url + path, timeout=10, **kw)

    def post(self, path: str, **kw: Any) -> requests.Response:
        return self.http.post(self.url + path, timeout=10, **kw)

    def connect(self, client_id: str | None = None) -> tuple[websocket.WebSocket, dict[str, Any]]:
        """A websocket (``clientId`` omitted when None) and its first frame (``status`` with ``sid``)."""
        query = "" if client_id is None else f"?clientId={client_id}"
        ws = websocket.create_connection(self.fake.ws_url + query, timeout=10)
        self._sockets.append(ws)
        return ws, json.loads(ws.recv())

    def submit(self, workflow: dict[str, Any], client_id: str | None, **extra: Any) -> requests.Response:
        body: dict[str, Any] = {"prompt": workflow, **extra}
        if client_id is not None:
            body["client_id"] = client_id
        return self.post("/prompt", json=body)

    def run(self, workflow: dict[str, Any], **extra: Any) -> tuple[str, list[dict[str, Any]]]:
        """Post on a fresh socket and return (prompt_id, frames after the first status up to executing null)."""
        client_id = str(uuid.uuid4())
        ws, _ = self.connect(client_id)
        reply = self.submit(workflow, client_id, **extra)
        assert reply.status_code == 200, reply.text
        prompt_id: str = reply.json()["prompt_id"]
        return prompt_id, frames_until_idle(ws, prompt_id)

    def control(self, **faults: Any) -> dict[str, Any]:
        reply = self.post("/fake/control", json=faults)
        assert reply.status_code == 200, reply.text
        result: dict[str, Any] = reply.json()
        return result

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = self.get("/fake/stats").json()
        return result

    def history(self, prompt_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.get(f"/history/{prompt_id}").json()
        return result


def recv_json(ws: websocket.WebSocket) -> dict[str, Any]:
    """The next text frame (binary preview frames are skipped)."""
    while True:
        opcode, data = ws.recv_data()
        if opcode == websocket.ABNF.OPCODE_TEXT:
            frame: dict[str, Any] = json.loads(data)
            return frame


def frames_until_idle(ws: websocket.WebSocket, prompt_id: str) -> list[dict[str, Any]]:
    frames = []
    while True:
        frame = recv_json(ws)
        frames.append(frame)
        if frame["type"] == "executing" and frame["data"]["node"] is None and frame["data"]["prompt_id"] == prompt_id:
            return frames


def wait_for(ws: websocket.WebSocket, kind: str, **match: Any) -> list[dict[str, Any]]:
    """Frames up to and including the first of ``kind`` whose data has ``match``'s values."""
    frames = []
    while True:
        frame = recv_json(ws)
        frames.append(frame)
        if frame["type"] == kind and all(frame["data"].get(k) == v for k, v in match.items()):
            return frames


def wait_until(check: Any, timeout: float = 5.0) -> Any:
    """Poll ``check()`` until truthy (for state only visible over HTTP, e.g. the queue)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.005)
    raise AssertionError("condition not met in time")


# -- comparing the fake with a recording ---------------------------------------------------------------------------

# Values that differ between any two runs of ComfyUI itself.
VARIABLE_KEYS = frozenset({"prompt_id", "timestamp", "sid", "client_id"})
TEMP_NAME = re.compile(r"ComfyUI_temp_[a-z]{5}_(\d{5})_\.png")
PATHS = re.compile(r"(full_output_folder|output_dir|commonpath): \S+")


def assert_like(recorded: Any, actual: Any, path: str = "$", variable: frozenset[str] = VARIABLE_KEYS) -> None:
    """Same keys (recursively), same types, and equal values except run-dependent ones."""
    if isinstance(recorded, dict):
        assert isinstance(actual, dict), f"{path}: expected an object, got {actual!r}"
        assert set(actual) == set(recorded), f"{path}: keys {sorted(actual)} != recorded {sorted(recorded)}"
        for key, value in recorded.items():
            where = f"{path}.{key}"
            if key in variable:
                assert type(actual[key]) is type(value), f"{where}: {actual[key]!r} is not like {value!r}"
            elif key == "current_outputs":  # a set in ComfyUI: order is arbitrary
                assert sorted(actual[key]) == sorted(value), where
            elif key == "exception_message":  # contains the server's folders
                assert PATHS.sub(r"\1: <path>", actual[key]) == PATHS.sub(r"\1: <path>", value), where
            else:
                assert_like(value, actual[key], where, variable)
    elif isinstance(recorded, list):
        assert isinstance(actual, list), f"{path}: expected a list, got {actual!r}"
        assert len(actual) == len(recorded), f"{path}: {len(actual)} items, recorded {len(recorded)}"
        for index, (rec, act) in enumerate(zip(recorded, actual, strict=True)):
            assert_like(rec, act, f"{path}[{index}]", variable)
    elif isinstance(recorded, str) and TEMP_NAME.fullmatch(recorded):
        counter = TEMP_NAME.sub(r"\1", recorded)  # random letters, same counter
        assert TEMP_NAME.fullmatch(str(actual)) and TEMP_NAME.sub(r"\1", actual) == counter, f"{path}: {actual!r}"
    else:
        assert type(actual) is type(recorded) and actual == recorded, f"{path}: {actual!r} != recorded {recorded!r}"


def collapse_progress(frames: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Runs of (progress_state, progress) pairs become one item: their count depends on timing."""
    out: list[dict[str, Any]] = []
    i = 0
    while i < len(frames):
        run = []
        while i + 1 < len(frames) and frames[i]["type"] == "progress_state" and frames[i + 1]["type"] == "progress":
            run.append([frames[i], frames[i + 1]])
            i += 2
        if run:
            out.append({"type": "progress_run", "first": run[0], "last": run[-1], "count": len(run)})
        else:
            out.append(frames[i])
            i += 1
    return out


def assert_frames_like(recorded: list[dict[str, Any]], actual: list[dict[str, Any]]) -> None:
    """Frame by frame; a progress run matches a recorded one whatever its length (first values may differ)."""
    rec, act = collapse_progress(recorded), collapse_progress(actual)
    assert [f["type"] for f in act] == [f["type"] for f in rec]
    for index, (r, a) in enumerate(zip(rec, act, strict=True)):
        if r["type"] == "progress_run":
            assert_like(r["first"], a["first"], f"frame[{index}].first", VARIABLE_KEYS | {"value"})
            assert_like(r["last"], a["last"], f"frame[{index}].last")
        else:
            assert_like(r, a, f"frame[{index}]")


# -- graphs and outputs used by several test modules ----------------------------------------------------------


def invert_graph(source: dict[str, Any], prefix: str = "inv") -> dict[str, Any]:
    return {
        "1": source,
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": prefix}},
    }


def empty(width: int = 8, height: int = 8, color: int = 0, batch: int = 1) -> dict[str, Any]:
    return {"class_type": "EmptyImage", "inputs": {"width": width, "height": height, "batch_size": batch,
                                                   "color": color}}  # fmt: skip


def sleeper(seconds: float, prefix: str = "sleep") -> dict[str, Any]:
    return {
        "1": empty(),
        "2": {"class_type": "TestSleep", "inputs": {"value": ["1", 0], "seconds": seconds}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": prefix}},
    }


def pixels(comfy: Comfy, image: dict[str, str]) -> PILImage.Image:
    reply = comfy.get("/view", params=image)
    assert reply.status_code == 200 and reply.headers["Content-Type"] == "image/png"
    with PILImage.open(io.BytesIO(reply.content)) as decoded:
        decoded.load()
        return decoded


def saved(comfy: Comfy, prompt_id: str, node: str = "3") -> list[dict[str, str]]:
    images: list[dict[str, str]] = comfy.history(prompt_id)[prompt_id]["outputs"][node]["images"]
    return images


def png_bytes(size: tuple[int, int], color: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    PILImage.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def upload(comfy: Comfy, name: str, data: bytes, **fields: str) -> dict[str, Any]:
    reply = comfy.post("/upload/image", files={"image": (name, data, "image/png")}, data=fields)
    assert reply.status_code == 200, reply.text
    result: dict[str, Any] = reply.json()
    return result
