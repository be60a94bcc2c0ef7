"""Following a run's events across dropped connections: where the client is in the stream, without I/O.

The API's stream (``GET /v1/runs/{id}/events``) gives each event its id and ends after the run's
terminal event (``done``, ``error``, ``canceled``). A connection that ends before it (an API
restarted, a proxy's idle cut) is opened again with ``Last-Event-ID``: the API sends only the later
events, so none is lost and none comes twice. A 204 tells the client it had the end already.
"""

from __future__ import annotations

from httpx_sse import ServerSentEvent

from comfy_dispatch_client.models import Event

READ_TIMEOUT = 60.0
"""Seconds of silence before a stream is taken as dead: the API sends a keep-alive every 15 s."""
LAST_EVENT_ID = "Last-Event-ID"


class EventCursor:
    """The last event id a client had, whether it had the end, and how many reconnections in a row failed."""

    def __init__(self, last_event_id: str | None = None) -> None:
        self.last_event_id = last_event_id or None
        self.ended = False
        self.failures = 0

    def headers(self) -> dict[str, str]:
        return {LAST_EVENT_ID: self.last_event_id} if self.last_event_id else {}

    def take(self, sse: ServerSentEvent) -> Event | None:
        """The event of one SSE frame (None for a frame that is no event); remembers its id, and the end."""
        if not sse.data:
            # httpx-sse hands out a frame for the blank line after a keep-alive comment once an id was seen
            # (it keeps the last id, and names it "message"): the format dispatches no event without data.
            return None
        event = Event.from_sse(sse.id, sse.event, sse.data)
        if sse.id:
            self.last_event_id = sse.id
        self.failures = 0
        if event.terminal:
            self.ended = True
        return event

    def lost(self) -> int:
        """Count a connection that failed or ended early; the number of such in a row."""
        self.failures += 1
        return self.failures

    def end(self) -> None:
        """The API said the client had the end already (204)."""
        self.ended = True
