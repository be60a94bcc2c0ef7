"""ComfyUI's websocket for one client id: connect before posting, then read events."""

from __future__ import annotations

import json
import logging
from types import TracebackType
from typing import Any
from urllib.parse import quote

import websocket

from dispatcher.errors import ComfyUIUnavailable

log = logging.getLogger(__name__)


class EventStream:
    """A websocket on ``/ws?clientId=...``; use as a context manager.

    Connect *before* posting the prompt: ComfyUI sends execution events only to
    the socket whose clientId matches, and does not replay them.
    """

    def __init__(self, ws_url: str, client_id: str, *, connect_timeout: float = 10.0) -> None:
        self.url = f"{ws_url}?clientId={quote(client_id)}"
        self.connect_timeout = connect_timeout
        self._ws: websocket.WebSocket | None = None

    def __enter__(self) -> EventStream:
        try:
            # websocket-client checks UTF-8 in pure Python (~0.1 ms a frame); decoding below checks it anyway.
            self._ws = websocket.create_connection(
                self.url, timeout=self.connect_timeout, enable_multithread=True, skip_utf8_validation=True
            )
        except (OSError, websocket.WebSocketException) as exc:
            raise ComfyUIUnavailable(f"websocket {self.url}: {exc}") from exc
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._ws is not None:
            try:
                self._ws.close(timeout=0.2)
            except (OSError, websocket.WebSocketException):
                pass  # closing a dead socket: nothing to save
            finally:
                self._ws.shutdown()  # type: ignore[no-untyped-call]  # the close handshake may have failed half-way: free the socket regardless
            self._ws = None

    def recv(self, timeout: float) -> dict[str, Any] | None:
        """The next JSON event; None if ``timeout`` passed with none. Binary preview frames are skipped."""
        assert self._ws is not None, "use EventStream as a context manager"
        self._ws.settimeout(max(timeout, 0.001))
        while True:
            try:
                frame = self._ws.recv()
            except websocket.WebSocketTimeoutException:
                return None
            except (OSError, websocket.WebSocketException) as exc:
                raise ComfyUIUnavailable(f"websocket closed mid-run: {exc.__class__.__name__}: {exc}") from exc
            except UnicodeDecodeError:
                log.warning("ignoring a websocket text frame that is not UTF-8")
                continue
            if isinstance(frame, bytes):
                continue  # a preview image; we store only final outputs
            if not frame:
                raise ComfyUIUnavailable("websocket closed mid-run")
            try:
                message = json.loads(frame)
            except ValueError:
                log.warning("ignoring a websocket frame that is not JSON: %.80r", frame)
                continue
            if isinstance(message, dict):
                return message
