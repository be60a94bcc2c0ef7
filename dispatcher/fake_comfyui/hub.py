"""Websocket fan-out: which socket gets which frame, delivered in the order frames were produced.

Like ComfyUI's ``send_sync`` + ``publish_loop``, producers only enqueue (never block, never reorder) and
one task writes. ``sid=None`` means every connected socket; otherwise only the socket registered under
that client id (nobody, if it is not connected).
"""

from __future__ import annotations

import asyncio
import json
import logging
import struct
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web

log = logging.getLogger(__name__)

PREVIEW_IMAGE = 1  # binary event type: 4-byte event, 4-byte image format, image bytes
PREVIEW_FORMAT_PNG = 2


@dataclass(frozen=True)
class _Frame:
    sid: str | None
    text: str | None = None
    data: bytes | None = None
    close: bool = False


class Hub:
    """Connected websockets by client id, plus an ordered outbox."""

    def __init__(self) -> None:
        self.sockets: dict[str, web.WebSocketResponse] = {}
        self._outbox: asyncio.Queue[_Frame] = asyncio.Queue()
        self._closing: set[asyncio.Task[Any]] = set()
        # The client of the running prompt and its current node: a reconnecting client is told where it is.
        self.client_id: str | None = None
        self.last_node_id: str | None = None

    def register(self, sid: str, ws: web.WebSocketResponse) -> None:
        """A reconnect with the same client id takes over; the old socket stays open but gets nothing more."""
        self.sockets[sid] = ws

    def unregister(self, sid: str, ws: web.WebSocketResponse) -> None:
        # Only drop the entry if it is still this socket (a newer connection may own the id by now).
        if self.sockets.get(sid) is ws:
            del self.sockets[sid]

    def send(self, event: str, data: dict[str, Any], sid: str | None = None) -> None:
        self._outbox.put_nowait(_Frame(sid, text=json.dumps({"type": event, "data": data})))

    def send_preview_png(self, png: bytes, sid: str | None) -> None:
        header = struct.pack(">I", PREVIEW_IMAGE) + struct.pack(">I", PREVIEW_FORMAT_PNG)
        self._outbox.put_nowait(_Frame(sid, data=header + png))

    def close_all(self) -> None:
        """Close every socket once the frames queued so far are written."""
        self._outbox.put_nowait(_Frame(None, close=True))

    async def publish(self) -> None:
        """Write queued frames forever (run as one task per app)."""
        while True:
            frame = await self._outbox.get()
            if frame.close:
                self._drop_all()
                continue
            targets = list(self.sockets.values()) if frame.sid is None else [self.sockets.get(frame.sid)]
            for ws in targets:
                if ws is None or ws.closed:
                    continue
                try:
                    if frame.text is not None:
                        await ws.send_str(frame.text)
                    elif frame.data is not None:
                        await ws.send_bytes(frame.data)
                except (aiohttp.ClientError, ConnectionError) as exc:
                    log.warning("websocket send failed: %s", exc)

    def _drop_all(self) -> None:
        sockets = list(self.sockets.values())
        self.sockets.clear()
        for ws in sockets:
            # Closing waits for the peer's reply; do it aside so the outbox keeps flowing.
            task = asyncio.create_task(ws.close(code=aiohttp.WSCloseCode.GOING_AWAY, message=b"fake drop_ws"))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
        log.info("dropped %d websocket(s) on request", len(sockets))

    async def shutdown(self) -> None:
        sockets = list(self.sockets.values())
        self.sockets.clear()
        closing = [ws.close(code=aiohttp.WSCloseCode.GOING_AWAY, message=b"server shutdown") for ws in sockets]
        await asyncio.gather(*closing, *self._closing, return_exceptions=True)
