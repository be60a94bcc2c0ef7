"""Turning run records into what clients see: timestamps, absolute output URLs, the run view."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import overload
from urllib.parse import quote

from fastapi import Request

from api.models import MissingView, OutputView, RunView
from dispatcher.outputs import kind_named, truncated
from dispatcher.runs import Output, Run
from dispatcher.storage import OutputStore


@overload
def rfc3339(timestamp: float) -> str: ...
@overload
def rfc3339(timestamp: None) -> None: ...
@overload
def rfc3339(timestamp: float | None) -> str | None: ...
def rfc3339(timestamp: float | None) -> str | None:
    """A Unix time as an RFC 3339 UTC string (``2025-01-31T12:00:00.123Z``); None stays None."""
    if timestamp is None:
        return None
    moment = datetime.fromtimestamp(timestamp, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Links:
    """Builds the absolute URLs of one response: from ``public_url`` if set, else the request's own base URL."""

    base: str
    store: OutputStore

    @classmethod
    def for_request(cls, request: Request, *, public_url: str, store: OutputStore) -> Links:
        return cls(base=public_url or str(request.base_url).rstrip("/"), store=store)

    def output(self, run_id: str, output: Output) -> str:
        """Where a client fetches ``output``: the store's own URL (S3...) or the API's output route."""
        direct = self.store.url(output.key)
        if direct is not None:
            return direct
        return f"{self.base}/v1/runs/{quote(run_id, safe='')}/outputs/{quote(output.filename, safe='')}"


def output_view(run_id: str, output: Output, links: Links) -> OutputView:
    """One output as the native API shows it (a text output with its text inline)."""
    return OutputView(
        node=output.node,
        filename=output.filename,
        url=links.output(run_id, output),
        content_type=output.content_type,
        size=output.size,
        kind=kind_named(output.kind, output.content_type),
        text=output.text,
        text_truncated=truncated(output.text, output.size),
    )


def run_view(
    run: Run,
    *,
    queue_position: int | None,
    links: Links,
    eta_seconds: float | None = None,
    waiting_for: list[MissingView] | None = None,
) -> RunView:
    """The native API's view of a run (``GET /v1/runs/{id}``)."""
    return RunView(
        id=run.id,
        workflow=run.workflow,
        workflow_version=run.workflow_version or None,
        status=run.status,
        priority=run.priority,
        # Workers report progress as a fraction; clamp so a rounding slip never breaks the documented range.
        progress=min(max(run.progress, 0.0), 1.0),
        queue_position=queue_position,
        params=run.params,
        outputs=[output_view(run.id, o, links) for o in run.outputs],
        error=run.error,
        created_at=rfc3339(run.created_at) if run.created_at else None,
        started_at=rfc3339(run.started_at),
        finished_at=rfc3339(run.finished_at),
        attempts=run.attempts,
        max_attempts=run.max_attempts,
        cached=bool(run.cached_from),
        cached_from=run.cached_from or None,
        gpu_seconds=round(run.gpu_seconds, 3),
        eta_seconds=eta_seconds,
        waiting_for=waiting_for,
        batch_id=run.batch_id or None,
    )
