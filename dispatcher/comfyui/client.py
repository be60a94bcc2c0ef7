"""A blocking HTTP client for one ComfyUI server (the routes in PROTOCOL.md).

Every call has a timeout. Connection failures and 5xx answers become
:class:`ComfyUIUnavailable` (transient); a 400 from ``/prompt`` becomes
:class:`ComfyUIValidationError` (never retried).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import requests

from dispatcher.errors import ComfyUIError, ComfyUIUnavailable, ComfyUIValidationError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class QueueState:
    running: tuple[str, ...]
    pending: tuple[str, ...]

    def __contains__(self, prompt_id: object) -> bool:
        return prompt_id in self.running or prompt_id in self.pending


class ComfyClient:
    """HTTP calls to one ComfyUI, over one keep-alive session."""

    def __init__(self, base_url: str, *, timeout: float = 10.0, session: requests.Session | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.session = session or requests.Session()

    def close(self) -> None:
        self.session.close()

    @property
    def ws_url(self) -> str:
        scheme, rest = self.base_url.split("://", 1)
        return f"{'wss' if scheme == 'https' else 'ws'}://{rest}/ws"

    def _request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", self.timeout)
        try:
            response = self.session.request(method, self.base_url + path, **kwargs)
        except requests.RequestException as exc:
            raise ComfyUIUnavailable(f"{method} {path}: {exc.__class__.__name__}: {exc}") from exc
        if response.status_code >= 500:
            raise ComfyUIUnavailable(f"{method} {path}: HTTP {response.status_code}")
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._request(method, path, **kwargs)
        if response.status_code != 200:
            raise ComfyUIError(f"{method} {path}: HTTP {response.status_code}: {response.text[:200]}")
        try:
            return response.json()
        except ValueError as exc:
            raise ComfyUIUnavailable(f"{method} {path}: reply is not JSON") from exc

    def post_prompt(self, graph: dict[str, Any], *, prompt_id: str, client_id: str) -> dict[str, Any]:
        """Queue ``graph``; returns ``{"prompt_id", "number", "node_errors"}``."""
        body = {"prompt": graph, "client_id": client_id, "prompt_id": prompt_id}
        response = self._request("POST", "/prompt", json=body)
        if response.status_code == 400:
            try:
                data = response.json()
            except ValueError:
                data = {}
            raise ComfyUIValidationError(
                data.get("error") or {"message": response.text[:500]}, data.get("node_errors") or {}
            )
        if response.status_code != 200:
            raise ComfyUIError(f"POST /prompt: HTTP {response.status_code}: {response.text[:200]}")
        reply: dict[str, Any] = response.json()
        return reply

    def history(self, prompt_id: str) -> dict[str, Any] | None:
        """The finished prompt's history entry, or None while unknown or unfinished."""
        data = self._json("GET", f"/history/{prompt_id}")
        entry = data.get(prompt_id) if isinstance(data, dict) else None
        return entry if isinstance(entry, dict) else None

    def queue(self) -> QueueState:
        data = self._json("GET", "/queue")
        return QueueState(
            running=tuple(str(item[1]) for item in data.get("queue_running", [])),
            pending=tuple(str(item[1]) for item in data.get("queue_pending", [])),
        )

    def interrupt(self, prompt_id: str | None = None) -> None:
        """Stop ``prompt_id`` if it is the running prompt (ComfyUI ignores it otherwise)."""
        self._request("POST", "/interrupt", json={"prompt_id": prompt_id} if prompt_id else {})

    def delete_pending(self, prompt_id: str) -> None:
        self._request("POST", "/queue", json={"delete": [prompt_id]})

    def system_stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = self._json("GET", "/system_stats")
        return stats

    def healthy(self) -> bool:
        try:
            self.system_stats()
        except ComfyUIError:
            return False
        return True

    @contextmanager
    def view(self, filename: str, subfolder: str, folder_type: str) -> Iterator[requests.Response]:
        """Stream one output file; the caller reads ``iter_content`` and the response is closed after."""
        params = {"filename": filename, "subfolder": subfolder, "type": folder_type}
        response = self._request("GET", "/view", params=params, stream=True)
        try:
            if response.status_code != 200:
                raise ComfyUIError(f"GET /view {subfolder}/{filename} ({folder_type}): HTTP {response.status_code}")
            yield response
        finally:
            response.close()

    def upload_image(
        self, data: bytes, filename: str, *, subfolder: str = "", overwrite: bool = False
    ) -> dict[str, Any]:
        """Upload an input image; returns ``{"name", "subfolder", "type"}`` (the name to bind)."""
        files = {"image": (filename, data)}
        form = {"type": "input", "subfolder": subfolder, "overwrite": "true" if overwrite else "false"}
        result: dict[str, Any] = self._json("POST", "/upload/image", files=files, data=form)
        return result
