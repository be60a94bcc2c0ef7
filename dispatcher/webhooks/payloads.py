"""What a callback receiver gets, in Comflowy's shapes, built from a run's events (pure).

A terminal event (``done``, ``error``, ``canceled``) goes to ``on_result_url`` as::

    {"type": "success" | "failed", "run_id": "...", "error": "..." (failed only),
     "output_images": [url, ...], "full_outputs": {"<node id>": {"images": [url, ...]}}}

Comflowy lists images only: ``output_images`` and each node's ``images`` hold the image outputs (animated
WEBP/PNG/GIF included); a node's other outputs go beside its ``images``, under ``videos``, ``audio``,
``files`` (URLs) and ``text`` (the strings themselves, as ComfyUI shows them): see :func:`comflowy_outputs`.

Every other event goes to ``on_progress_event_url`` (when the run gave one) as
``{"type": "waiting" | "pending" | "running" | "message", "payload": {...}}``: ``queued`` is
waiting, ``started`` pending, ``progress`` running, ``output`` and ``retrying`` are messages.
The payload names the run and the event, and carries only the event fields meant for clients:
worker names, ComfyUI addresses and storage keys stay ours.

A batch's ``on_batch_done_url`` gets, once, when its last run has ended::

    {"type": "batch.done", "batch_id": "...", "total": N, "counts": {"succeeded": ..., "failed": ...,
     "canceled": ..., ...}, "gpu_seconds": ...}

(the same bytes however often it is relayed: a batch that is done changes no more).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any
from urllib.parse import quote

from dispatcher.batches import BATCH_DONE, Batch
from dispatcher.events import TERMINAL_EVENTS, Event
from dispatcher.outputs import kind_named, kind_of
from dispatcher.runs import Output


class CallbackKind(StrEnum):
    RESULT = "result"
    PROGRESS = "progress"


CALLBACK_URL_KEY = {CallbackKind.RESULT: "on_result_url", CallbackKind.PROGRESS: "on_progress_event_url"}

PROGRESS_TYPES = {
    "queued": "waiting",
    "started": "pending",
    "progress": "running",
    "output": "message",
    "retrying": "message",
}

PUBLIC_FIELDS: dict[str, tuple[str, ...]] = {
    "queued": ("workflow", "priority"),
    "started": ("attempt",),
    "progress": ("progress", "node"),
    "output": ("node", "filename", "content_type", "size", "kind", "text"),
    "retrying": ("attempt", "retry_at", "error"),
}

UrlFor = Callable[[str, Output], str]
"""(run id, output) -> the URL a receiver fetches the file from."""


def webhook_id(run_id: str, event_id: str) -> str:
    """The message id of one event's delivery: the same on every attempt, so receivers can drop repeats."""
    return f"msg_{run_id}_{event_id}"


def callback_for(event_type: str, callbacks: Mapping[str, str] | None) -> tuple[CallbackKind, str] | None:
    """Which callback an event goes to, and its URL; None when the run gave no URL for it."""
    kind = CallbackKind.RESULT if event_type in TERMINAL_EVENTS else CallbackKind.PROGRESS
    if kind is CallbackKind.PROGRESS and event_type not in PROGRESS_TYPES:
        return None  # an event type this module does not know: nothing promised to receivers
    url = (callbacks or {}).get(CALLBACK_URL_KEY[kind])
    return (kind, url) if url else None


def api_output_url(base: str) -> UrlFor:
    """Output URLs served by the API: ``{base}/v1/runs/{id}/outputs/{filename}`` (base may be empty: relative)."""

    def url_for(run_id: str, output: Output) -> str:
        return f"{base}/v1/runs/{quote(run_id, safe='')}/outputs/{quote(output.filename, safe='')}"

    return url_for


def result_payload(run_id: str, event: Event, outputs: Sequence[Output], url_for: UrlFor) -> dict[str, Any]:
    """The ``on_result_url`` payload of a terminal event (outputs count only for a success)."""
    success = event.type == "done"
    payload: dict[str, Any] = {
        "type": "success" if success else "failed",
        "run_id": run_id,
        "output_images": [],
        "full_outputs": {},
    }
    if not success:
        error = event.data.get("error")
        message = error.get("message") if isinstance(error, dict) else None
        payload["error"] = str(message or f"run {event.data.get('status') or event.type}")
        return payload
    payload["output_images"], payload["full_outputs"] = comflowy_outputs(outputs, lambda o: url_for(run_id, o))
    return payload


# Where a node's outputs other than images go in Comflowy's full_outputs, beside its images.
COMFLOWY_KEYS = {"video": "videos", "audio": "audio", "file": "files", "text": "files"}


def comflowy_outputs(
    outputs: Sequence[Output], url: Callable[[Output], str]
) -> tuple[list[str], dict[str, dict[str, list[str]]]]:
    """Comflowy's ``output_images`` and ``full_outputs`` of a run's outputs (see the module docstring).

    A text output is its string under ``text``; a text file a node saved (no inline text) is a file.
    """
    images: list[str] = []
    full: dict[str, dict[str, list[str]]] = {}
    for output in outputs:
        node = full.setdefault(output.node, {"images": []})
        kind = kind_named(output.kind, output.content_type)
        if kind == "image":
            images.append(url(output))
            node["images"].append(url(output))
        elif kind == "text" and output.text is not None:
            node.setdefault("text", []).append(output.text)
        else:
            node.setdefault(COMFLOWY_KEYS[kind], []).append(url(output))
    return images, full


def progress_payload(run_id: str, event: Event, url_for: UrlFor) -> dict[str, Any]:
    """The ``on_progress_event_url`` payload of a non-terminal event."""
    details: dict[str, Any] = {"run_id": run_id, "event": event.type, "at": event_time(event.id)}
    details.update({k: event.data[k] for k in PUBLIC_FIELDS.get(event.type, ()) if k in event.data})
    if event.type == "output":
        output = Output.from_dict(event.data)
        details["url"] = url_for(run_id, output)
        details.setdefault("kind", kind_of(output.content_type))  # written by a worker older than kinds
    return {"type": PROGRESS_TYPES[event.type], "payload": details}


def batch_payload(batch: Batch) -> dict[str, Any]:
    """The ``on_batch_done_url`` payload: the batch's runs counted by how they ended."""
    return {
        "type": BATCH_DONE,
        "batch_id": batch.id,
        "total": batch.total,
        "counts": dict(batch.counts),
        "gpu_seconds": round(batch.gpu_seconds, 3),
    }


def encode(payload: Mapping[str, Any]) -> bytes:
    """The exact bytes sent (and signed): compact JSON, UTF-8."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def event_time(event_id: str) -> str:
    """When a stream entry was written (its id is ``<ms>-<seq>``), as RFC 3339 UTC."""
    millis = int(event_id.split("-", 1)[0])
    moment = datetime.fromtimestamp(millis / 1000, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
