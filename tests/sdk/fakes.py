"""What the SDK's unit tests answer through ``httpx.MockTransport``: runs, batches, SSE frames, problems."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx

API = "http://api.test"


def run_json(run_id: str = "r1", status: str = "queued", **extra: Any) -> dict[str, Any]:
    """A run as ``GET /v1/runs/{id}`` shows it."""
    return {
        "id": run_id,
        "workflow": "invert",
        "status": status,
        "priority": "normal",
        "progress": 1.0 if status == "succeeded" else 0.0,
        "queue_position": 0 if status == "queued" else None,
        "params": {"color": 1},
        "outputs": [],
        "error": None,
        "created_at": "2025-01-31T12:00:00.000Z",
        "started_at": None,
        "finished_at": None,
        "attempts": 0,
        "max_attempts": 3,
        "cached": False,
        "cached_from": None,
        "gpu_seconds": 0.0,
        "eta_seconds": None,
        "batch_id": None,
        **extra,
    }


def problem(status: int, detail: str = "", **extra: Any) -> httpx.Response:
    body = {"type": f"https://errors.test/{status}", "title": f"title {status}", "status": status, "detail": detail}
    headers = {"content-type": "application/problem+json"}
    if "retry_after" in extra:
        headers["retry-after"] = str(extra.pop("retry_after"))
    return httpx.Response(status, json={**body, **extra}, headers=headers)


def sse(*events: tuple[str, str, dict[str, Any]], comments: int = 0) -> bytes:
    """Frames of ``(id, type, data)`` events, a keep-alive comment after each if ``comments``."""
    out = b""
    for event_id, kind, data in events:
        out += f"id: {event_id}\nevent: {kind}\ndata: {json.dumps(data)}\n\n".encode()
        out += b": keep-alive\n\n" * comments
    return out


def sse_response(body: bytes) -> httpx.Response:
    return httpx.Response(200, content=body, headers={"content-type": "text/event-stream"})


class Recorder:
    """A MockTransport handler answering from a list of callables in turn, keeping every request."""

    def __init__(self, *answers: Callable[[httpx.Request], httpx.Response] | httpx.Response) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if not self.answers:
            raise AssertionError(f"unexpected request {request.method} {request.url}")
        answer = self.answers.pop(0)
        return answer(request) if callable(answer) else answer

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self)


def refuse_connection(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("connection refused", request=request)


class Sleeps(list[float]):
    """A recorder of the waits a client asked for, in place of time.sleep."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)
