"""The API's requests and how to read their answers, without I/O: the sync and async clients share them.

An :class:`Op` is one request (method, path, query, body, headers) and the function that turns
its successful answer into a typed result. The clients send it, retry it, and map error answers
to :mod:`comfy_dispatch_client.errors`.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx

from comfy_dispatch_client.errors import ProtocolError
from comfy_dispatch_client.models import Batch, Run, RunPage, Workflow, WorkflowVersion

T = TypeVar("T")

MAX_WAIT_SECONDS = 300.0
"""The longest one ``?wait=`` the API takes; a longer wait is several polls."""
MIN_POLL_SECONDS = 0.5
"""Least time between two polls of a run, should an API answer a long poll early."""
DEFAULT_PAGE = 100
"""Runs per page of a listing, unless asked otherwise."""
IDEMPOTENCY_HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
# Options of a submission besides params and priority; "stream" is not one: its answer is not a run.
REFUSED_OPTIONS = frozenset({"stream"})


@dataclass(frozen=True)
class Op(Generic[T]):
    """One request and the reader of its successful answer."""

    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    params: Mapping[str, str] | None = None
    json: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    read_timeout: float | None = None
    """Overrides the client's read timeout (a long poll must outlast its wait)."""


def new_idempotency_key() -> str:
    return str(uuid.uuid4())


def segment(value: str, what: str) -> str:
    """``value`` quoted as one path segment; an empty value is refused (it would address another route)."""
    if not value:
        raise ValueError(f"{what} must not be empty")
    return quote(value, safe="")


def json_of(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        raise ProtocolError(
            f"{response.request.method} {response.request.url.path} answered {response.status_code} "
            f"with a body that is not JSON"
        ) from None


def _run(response: httpx.Response) -> Run:
    return Run.from_json(json_of(response), replayed=response.headers.get(REPLAYED_HEADER, "").lower() == "true")


def _batch(response: httpx.Response) -> Batch:
    return Batch.from_json(json_of(response))


def run_body(params: Mapping[str, Any] | None, priority: str | None, options: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON body of a native submission."""
    refused = REFUSED_OPTIONS & set(options)
    if refused:
        raise ValueError(f"option {sorted(refused)[0]!r} is not supported by this client")
    body: dict[str, Any] = {"params": dict(params or {})}
    if priority is not None:
        body["priority"] = str(priority)
    body.update(options)
    return body


def submit(
    workflow: str,
    params: Mapping[str, Any] | None,
    *,
    priority: str | None,
    idempotency_key: str | None,
    options: Mapping[str, Any],
) -> Op[Run]:
    """``POST /v1/workflows/{workflow}/runs`` with an Idempotency-Key (the caller's, else a new uuid4)."""
    return Op(
        "POST",
        f"/v1/workflows/{segment(workflow, 'workflow')}/runs",
        _run,
        json=run_body(params, priority, options),
        headers={IDEMPOTENCY_HEADER: idempotency_key or new_idempotency_key()},
    )


def get_run(run_id: str, *, wait: float = 0.0) -> Op[Run]:
    """``GET /v1/runs/{id}``, a long poll of up to ``wait`` seconds (at most :data:`MAX_WAIT_SECONDS`)."""
    wait = max(0.0, min(wait, MAX_WAIT_SECONDS))
    params = {"wait": f"{wait:.3f}".rstrip("0").rstrip(".")} if wait >= 0.001 else None
    return Op(
        "GET", f"/v1/runs/{segment(run_id, 'run_id')}", _run, params=params, read_timeout=wait + 30 if params else None
    )


def cancel_run(run_id: str) -> Op[Run]:
    return Op("POST", f"/v1/runs/{segment(run_id, 'run_id')}/cancel", _run)


def next_page_size(page_size: int, max_items: int | None, got: int) -> int:
    """The ``limit`` of the next page, ``got`` items in, to get at most ``max_items`` (None: all); 0 to stop."""
    if page_size < 1:
        raise ValueError("page_size must be at least 1")
    return page_size if max_items is None else max(0, min(page_size, max_items - got))


def since_param(since: datetime | float | str) -> str:
    """``since`` as the API takes it: RFC 3339 for a datetime (a naive one is taken as UTC), else Unix seconds."""
    if isinstance(since, datetime):
        return (since if since.tzinfo else since.replace(tzinfo=UTC)).isoformat()
    if isinstance(since, int | float) and not isinstance(since, bool):
        return repr(float(since)) if isinstance(since, float) else str(since)
    if isinstance(since, str) and since.strip():
        return since.strip()
    raise ValueError(f"since must be a datetime, Unix seconds or an RFC 3339 string, not {since!r}")


def list_runs(
    *,
    status: str | None,
    workflow: str | None,
    since: datetime | float | str | None,
    limit: int,
    cursor: str | None,
) -> Op[RunPage]:
    """One page of ``GET /v1/runs``, newest first."""
    params = {"limit": str(limit)}
    if status is not None:
        params["status"] = str(status)
    if workflow is not None:
        params["workflow"] = workflow
    if since is not None:
        params["since"] = since_param(since)
    if cursor is not None:
        params["cursor"] = cursor
    return Op("GET", "/v1/runs", lambda response: RunPage.from_json(json_of(response)), params=params)


def submit_batch(items: list[dict[str, Any]], *, on_batch_done_url: str | None) -> Op[Any]:
    """``POST /v1/runs/batch`` of up to 1000 items (each with its idempotency_key); the answer as JSON."""
    body: dict[str, Any] = {"runs": items}
    if on_batch_done_url is not None:
        body["on_batch_done_url"] = on_batch_done_url
    return Op("POST", "/v1/runs/batch", json_of, json=body)


def get_batch(batch_id: str, *, limit: int | None = None, cursor: str | None = None) -> Op[Batch]:
    params: dict[str, str] = {}
    if limit is not None:
        params["limit"] = str(limit)
    if cursor is not None:
        params["cursor"] = cursor
    return Op("GET", f"/v1/batches/{segment(batch_id, 'batch_id')}", _batch, params=params or None)


def cancel_batch(batch_id: str) -> Op[Batch]:
    return Op("POST", f"/v1/batches/{segment(batch_id, 'batch_id')}/cancel", _batch)


def events_path(run_id: str) -> str:
    return f"/v1/runs/{segment(run_id, 'run_id')}/events"


# -- workflows ------------------------------------------------------------------------------------------------


def _workflow(response: httpx.Response) -> Workflow:
    return Workflow.from_json(json_of(response))


def list_workflows() -> Op[list[Workflow]]:
    def parse(response: httpx.Response) -> list[Workflow]:
        data = json_of(response)
        items = data.get("workflows") if isinstance(data, dict) else None
        if not isinstance(items, list):
            raise ProtocolError("GET /v1/workflows: no workflows list in the answer")
        return [Workflow.from_json(item) for item in items]

    return Op("GET", "/v1/workflows", parse)


def get_workflow(workflow: str, version: int | None = None) -> Op[Workflow]:
    params = {"version": str(version)} if version is not None else None
    return Op("GET", f"/v1/workflows/{segment(workflow, 'workflow')}", _workflow, params=params)


def workflow_versions(workflow: str) -> Op[list[WorkflowVersion]]:
    def parse(response: httpx.Response) -> list[WorkflowVersion]:
        data = json_of(response)
        items = data.get("versions") if isinstance(data, dict) else None
        if not isinstance(items, list):
            raise ProtocolError("GET /v1/workflows/{id}/versions: no versions list in the answer")
        return [WorkflowVersion.from_json(item) for item in items]

    return Op("GET", f"/v1/workflows/{segment(workflow, 'workflow')}/versions", parse)


def publish_workflow(workflow: str, graph: Mapping[str, Any], manifest: Mapping[str, Any] | None) -> Op[Workflow]:
    """``PUT /v1/workflows/{id}``: safe to send again (the same graph and manifest publish no new version)."""
    body: dict[str, Any] = {"graph": dict(graph)}
    if manifest is not None:
        body["manifest"] = dict(manifest)
    return Op("PUT", f"/v1/workflows/{segment(workflow, 'workflow')}", _workflow, json=body)


def retire_workflow(workflow: str) -> Op[None]:
    return Op("DELETE", f"/v1/workflows/{segment(workflow, 'workflow')}", lambda response: None)
