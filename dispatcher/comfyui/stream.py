"""ComfyUI's websocket for a whole worker: one ``clientId``, one reader thread, frames routed by ``prompt_id``.

ComfyUI sends a prompt's execution events only to the socket whose ``clientId`` is the prompt's
``client_id``, and never replays them. A worker keeps one socket open for its life and posts every
prompt with that socket's client id (no handshake per run); a run *subscribes* to its prompt id
before posting, so no frame of it can arrive unrouted. ``status`` frames (queue changes, sent to
every socket) go to every subscriber: a follower that cannot receive its prompt's events (posted
by another client) looks at ``/history`` when the queue changes. When the socket drops, every
subscriber gets :data:`DISCONNECTED` and decides for itself (its prompt may have finished); the
next subscription connects again.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from types import TracebackType
from typing import Any
from urllib.parse import quote

import websocket

from dispatcher.errors import ComfyUIUnavailable

log = logging.getLogger(__name__)

DISCONNECTED: dict[str, Any] = {"type": "comfy-dispatch:disconnected", "data": {}}
"""What a subscription receives when the socket it listened on closed."""

# Silence is normal (one long node), so a read that waits this long sends a ping; when the next one waits as
# long again, without even the pong, the connection is dead (half-open: a peer gone without a reset).
READ_TIMEOUT_SECONDS = 30.0
# ComfyUI sends the whole table of node states (progress_state) around every node: the largest and most
# frequent frames, telling nothing executing/progress/executed do not. Left unparsed (a third of the CPU
# a prompt costs here); json.dumps writes the type first, and a frame in another form is parsed as usual.
SKIPPED_PREFIX = '{"type": "progress_state"'


class Subscription:
    """The frames of one prompt (and every ``status`` frame), in order; use as a context manager."""

    def __init__(self, hub: EventHub, prompt_id: str) -> None:
        self.hub = hub
        self.prompt_id = prompt_id
        self._frames: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()

    def get(self, timeout: float) -> dict[str, Any] | None:
        """The next frame, or None when ``timeout`` seconds passed without one."""
        try:
            return self._frames.get(timeout=max(timeout, 0.0))
        except queue.Empty:
            return None

    def put(self, frame: dict[str, Any]) -> None:
        self._frames.put(frame)

    def reconnect(self) -> None:
        """After :data:`DISCONNECTED`: listen again on a new socket (ComfyUIUnavailable if it cannot connect)."""
        self.hub.connect()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.hub.unsubscribe(self)


class EventHub:
    """One websocket to one ComfyUI, shared by every run a worker holds."""

    def __init__(
        self, ws_url: str, client_id: str, *, connect_timeout: float = 10.0, read_timeout: float = READ_TIMEOUT_SECONDS
    ) -> None:
        self.client_id = client_id
        self.url = f"{ws_url}?clientId={quote(client_id)}"
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self._subs: dict[str, Subscription] = {}
        self._lock = threading.Lock()  # guards _subs and _ws
        self._connecting = threading.Lock()  # one handshake at a time
        self._ws: websocket.WebSocket | None = None

    def subscribe(self, prompt_id: str) -> Subscription:
        """Listen for ``prompt_id``'s frames, connecting first if need be: call before posting the prompt."""
        subscription = Subscription(self, prompt_id)
        with self._lock:
            self._subs[prompt_id] = subscription
        try:
            self.connect()
        except ComfyUIUnavailable:
            self.unsubscribe(subscription)
            raise
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        with self._lock:
            if self._subs.get(subscription.prompt_id) is subscription:
                del self._subs[subscription.prompt_id]

    @property
    def connected(self) -> bool:
        return self._ws is not None

    def connect(self) -> None:
        """Open the socket unless it is open (ComfyUIUnavailable if ComfyUI does not answer)."""
        with self._connecting:
            if self._ws is not None:
                return
            try:
                # websocket-client checks UTF-8 in pure Python (~0.1 ms a frame); json.loads checks it anyway.
                ws = websocket.create_connection(
                    self.url, timeout=self.connect_timeout, enable_multithread=True, skip_utf8_validation=True
                )
            except (OSError, websocket.WebSocketException) as exc:
                raise ComfyUIUnavailable(f"websocket {self.url}: {exc}") from exc
            ws.settimeout(self.read_timeout)
            with self._lock:
                self._ws = ws
            threading.Thread(target=self._read, args=(ws,), name="comfyui-ws", daemon=True).start()

    def close(self) -> None:
        with self._lock:
            ws, self._ws = self._ws, None
        if ws is not None:
            _close(ws)

    def _read(self, ws: websocket.WebSocket) -> None:
        pinged = False  # a ping is out, unanswered
        try:
            while True:
                try:
                    opcode, data = ws.recv_data(control_frame=True)
                except websocket.WebSocketTimeoutException:
                    if pinged:
                        log.warning(
                            "ComfyUI websocket silent, not even a pong, for %.0fs: reconnecting", self.read_timeout
                        )
                        break
                    ws.ping()
                    pinged = True
                    continue
                pinged = False  # any frame, the pong included, says the connection lives
                if opcode == websocket.ABNF.OPCODE_CLOSE:
                    break  # closed by ComfyUI
                if opcode != websocket.ABNF.OPCODE_TEXT:
                    continue  # a preview image (only final outputs are stored), a ping or a pong
                try:
                    self._route(data if isinstance(data, str) else data.decode("utf-8"))
                except UnicodeDecodeError:
                    log.warning("ignoring a websocket text frame that is not UTF-8")
        except (OSError, websocket.WebSocketException) as exc:
            log.info("ComfyUI websocket closed: %s: %s", exc.__class__.__name__, exc)
        finally:
            with self._lock:
                ours = self._ws is ws
                if ours:
                    self._ws = None
                listeners = list(self._subs.values()) if ours else []
            _close(ws)
            for subscription in listeners:
                subscription.put(DISCONNECTED)

    def _route(self, frame: str) -> None:
        if frame.startswith(SKIPPED_PREFIX):
            return
        try:
            message = json.loads(frame)
        except ValueError:
            log.warning("ignoring a websocket frame that is not JSON: %.80r", frame)
            return
        if not isinstance(message, dict):
            return
        data = message.get("data")
        prompt_id = data.get("prompt_id") if isinstance(data, dict) else None
        with self._lock:
            if prompt_id is not None:
                targets = [s for s in (self._subs.get(str(prompt_id)),) if s is not None]
            elif message.get("type") == "status":
                targets = list(self._subs.values())
            else:
                targets = []
        for subscription in targets:
            subscription.put(message)


def _close(ws: websocket.WebSocket) -> None:
    try:
        ws.close(timeout=0.2)
    except (OSError, websocket.WebSocketException):
        pass  # closing a dead socket: nothing to save
    finally:
        ws.shutdown()  # type: ignore[no-untyped-call]  # the close handshake may have failed half-way
