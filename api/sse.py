"""Server-Sent Events framing, and the native API's public form of a run event. Pure functions, no I/O.

A frame is ``id:``, ``event:`` and ``data:`` lines ended by a blank line (the WHATWG
``text/event-stream`` format); a line starting with ``:`` is a comment, which clients ignore and
proxies see as traffic (the keep-alive).
"""

from __future__ import annotations

import json
import re
from typing import Any

from api.views import Links
from dispatcher.errors import ParameterError
from dispatcher.events import Event
from dispatcher.outputs import kind_of
from dispatcher.runs import Output

MEDIA_TYPE = "text/event-stream"
HEADERS = {
    "Cache-Control": "no-cache",
    # nginx buffers proxied responses unless told not to; an event stream must reach the client as written.
    "X-Accel-Buffering": "no",
}
KEEP_ALIVE = b": keep-alive\n\n"
# Redis stream entry ids, which are our event ids: milliseconds, a dash, a sequence number.
EVENT_ID_RE = re.compile(r"\d{1,20}-\d{1,20}")
# Fields of the internal events that clients must not see: where the store keeps a file (replaced by its
# URL) and the address of the ComfyUI that ran it (an internal host).
PRIVATE_FIELDS = {"output": ("key",), "started": ("comfyui_url",)}


def frame(data: str, *, event: str | None = None, id: str | None = None) -> bytes:
    """One event; ``data`` may hold newlines (each line becomes a ``data:`` line, as the format requires)."""
    lines = []
    if id:
        lines.append(f"id: {id}")
    if event:
        lines.append(f"event: {event}")
    lines.extend(f"data: {line}" for line in data.split("\n"))
    return ("\n".join(lines) + "\n\n").encode("utf-8")


def comment(text: str) -> bytes:
    """A comment line: ignored by clients, it keeps idle proxies from closing the connection."""
    return f": {text}\n\n".encode()


def parse_event_id(value: str | None, *, name: str = "Last-Event-ID") -> str | None:
    """A client's last seen event id, or None; ParameterError (422) naming ``name`` for anything else."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    if not EVENT_ID_RE.fullmatch(value):
        raise ParameterError(name, "must be an event id as sent in the stream, such as 1700000000000-0")
    return value


def event_time(event: Event) -> float | None:
    """When the event was written, in Unix seconds, from its stream id (milliseconds-sequence)."""
    millis, _, _ = event.id.partition("-")
    return int(millis) / 1000 if millis.isdigit() else None


def public_data(event: Event, run_id: str, links: Links) -> dict[str, Any]:
    """An event's data as clients see it: an output's storage key becomes its URL, internal addresses go."""
    data = {k: v for k, v in event.data.items() if k not in PRIVATE_FIELDS.get(event.type, ())}
    if event.type == "output" and "key" in event.data:
        output = Output(
            node=str(event.data.get("node", "")),
            filename=str(event.data.get("filename", "")),
            content_type=str(event.data.get("content_type", "")),
            size=int(event.data.get("size") or 0),
            key=str(event.data["key"]),
        )
        data["url"] = links.output(run_id, output)
        data.setdefault("kind", kind_of(output.content_type))  # written by a worker older than kinds
    return data


def native_frame(event: Event, run_id: str, links: Links) -> bytes:
    """The native API's frame of one run event: its stream id, its type, its public data as JSON."""
    data = json.dumps(public_data(event, run_id, links), separators=(",", ":"), ensure_ascii=False)
    return frame(data, event=event.type, id=event.id)
