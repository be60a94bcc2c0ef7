"""Typed results: runs, their outputs and events, batches. Plain frozen dataclasses built from the API's JSON.

Each ``from_json`` keeps the object as the API sent it in ``raw``, so a field this version does not
know yet is still at hand; a missing or mistyped field it needs is a :class:`ProtocolError`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from comfy_dispatch_client.errors import ApiError, ProtocolError, problem_error

TERMINAL_EVENTS = frozenset({"done", "error", "canceled"})


class RunStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"

    @property
    def ended(self) -> bool:
        return self in (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELED)


def _object(data: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise ProtocolError(f"expected a JSON object for {what}, got {type(data).__name__}")
    return data


def _get(data: Mapping[str, Any], name: str, kind: type | tuple[type, ...], what: str) -> Any:
    value = data.get(name)
    if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _kinds(kind)):
        raise ProtocolError(f"{what}: field {name!r} missing or not {_names(kind)}: {value!r}")
    return value


def _optional(data: Mapping[str, Any], name: str, kind: type | tuple[type, ...], what: str) -> Any:
    return None if data.get(name) is None else _get(data, name, kind, what)


def _kinds(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _names(kind: type | tuple[type, ...]) -> str:
    return " or ".join(k.__name__ for k in _kinds(kind))


def _number(data: Mapping[str, Any], name: str, what: str, default: float | None = None) -> float | None:
    if data.get(name) is None:
        return default
    return float(_get(data, name, (int, float), what))


def _time(data: Mapping[str, Any], name: str, what: str) -> datetime | None:
    value = _optional(data, name, str, what)
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise ProtocolError(f"{what}: field {name!r} is not an RFC 3339 time: {value!r}") from None


def kind_of(content_type: str) -> str:
    """An output's kind by its content type (for an API or an event older than kinds): as the API decides it."""
    essence = content_type.split(";", 1)[0].strip().lower()
    major = essence.split("/", 1)[0]
    if major in ("image", "video", "audio"):
        return major
    return "text" if essence == "text/plain" else "file"


@dataclass(frozen=True)
class Output:
    """One output a run produced; ``url`` is absolute (the API's, or a presigned storage URL)."""

    node: str
    filename: str
    url: str
    content_type: str
    size: int
    sha256: str | None = None
    """Hex digest of the file, when the API gives one (a download is checked against it)."""
    kind: str = "file"
    """image, video, audio, text or file (by its content type when the API does not say)."""
    text: str | None = None
    """A text output's string (also downloadable at ``url``); None for files."""

    @classmethod
    def from_json(cls, data: Any) -> Output:
        data = _object(data, "an output")
        return cls(
            node=str(data.get("node", "")),
            filename=_get(data, "filename", str, "output"),
            url=_get(data, "url", str, "output"),
            content_type=str(data.get("content_type") or "application/octet-stream"),
            size=int(_number(data, "size", "output", 0) or 0),
            sha256=_optional(data, "sha256", str, "output"),
            kind=str(data.get("kind") or kind_of(str(data.get("content_type") or ""))),
            text=_optional(data, "text", str, "output"),
        )


@dataclass(frozen=True)
class Run:
    """A run as the API shows it (``GET /v1/runs/{id}``)."""

    id: str
    workflow: str
    status: RunStatus
    priority: str
    progress: float
    queue_position: int | None
    params: dict[str, Any]
    outputs: list[Output]
    error: dict[str, Any] | None
    created_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    attempts: int
    max_attempts: int
    cached: bool
    cached_from: str | None
    gpu_seconds: float
    eta_seconds: float | None
    batch_id: str | None
    workflow_version: int | None = None
    """The version of its workflow it runs (None from an API that does not say)."""
    replayed: bool = False
    """Set on a submission's answer: its Idempotency-Key had been used before, and this is that first run."""
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def ended(self) -> bool:
        return self.status.ended

    @property
    def succeeded(self) -> bool:
        return self.status is RunStatus.SUCCEEDED

    @classmethod
    def from_json(cls, data: Any, *, replayed: bool = False) -> Run:
        data = _object(data, "a run")
        what = f"run {data.get('id')!r}"
        try:
            status = RunStatus(_get(data, "status", str, what))
        except ValueError:
            raise ProtocolError(f"{what}: unknown status {data.get('status')!r}") from None
        outputs = data.get("outputs") or []
        if not isinstance(outputs, list):
            raise ProtocolError(f"{what}: outputs is not a list")
        return cls(
            id=_get(data, "id", str, what),
            workflow=str(data.get("workflow", "")),
            status=status,
            priority=str(data.get("priority") or "normal"),
            progress=float(_number(data, "progress", what, 0.0) or 0.0),
            queue_position=_optional(data, "queue_position", int, what),
            params=dict(_optional(data, "params", dict, what) or {}),
            outputs=[Output.from_json(o) for o in outputs],
            error=_optional(data, "error", dict, what),
            created_at=_time(data, "created_at", what),
            started_at=_time(data, "started_at", what),
            finished_at=_time(data, "finished_at", what),
            attempts=int(_number(data, "attempts", what, 0) or 0),
            max_attempts=int(_number(data, "max_attempts", what, 0) or 0),
            cached=bool(data.get("cached", False)),
            cached_from=_optional(data, "cached_from", str, what),
            gpu_seconds=float(_number(data, "gpu_seconds", what, 0.0) or 0.0),
            eta_seconds=_number(data, "eta_seconds", what),
            batch_id=_optional(data, "batch_id", str, what),
            workflow_version=_optional(data, "workflow_version", int, what),
            replayed=replayed,
            raw=dict(data),
        )


@dataclass(frozen=True)
class Event:
    """One event of a run's stream: ``queued``, ``started``, ``progress``, ``output``, ``retrying``, or the end
    (``done``, ``error``, ``canceled``). ``id`` resumes the stream after it (``Last-Event-ID``)."""

    id: str
    type: str
    data: dict[str, Any]

    @property
    def terminal(self) -> bool:
        return self.type in TERMINAL_EVENTS

    @classmethod
    def from_sse(cls, id: str, type: str, data: str) -> Event:
        try:
            parsed = json.loads(data) if data else {}
        except ValueError:
            parsed = {"text": data}
        return cls(id=id, type=type or "message", data=parsed if isinstance(parsed, dict) else {"value": parsed})


@dataclass(frozen=True)
class RunPage:
    """One page of ``GET /v1/runs``: newest first; ``next_cursor`` asks for the next one (None: the last)."""

    runs: list[Run]
    next_cursor: str | None

    @classmethod
    def from_json(cls, data: Any) -> RunPage:
        data = _object(data, "a page of runs")
        runs = _get(data, "runs", list, "page of runs")
        return cls(runs=[Run.from_json(r) for r in runs], next_cursor=_optional(data, "next_cursor", str, "page"))


@dataclass(frozen=True)
class BatchCounts:
    queued: int = 0
    running: int = 0
    succeeded: int = 0
    failed: int = 0
    canceled: int = 0

    @classmethod
    def from_json(cls, data: Any) -> BatchCounts:
        data = _object(data or {}, "batch counts")
        return cls(**{name: int(_number(data, name, "counts", 0) or 0) for name in cls.__dataclass_fields__})


@dataclass(frozen=True)
class Batch:
    """A batch (``GET /v1/batches/{id}``): counts by status, and one page of its runs (``next_cursor`` for more)."""

    id: str
    created_at: datetime | None
    total: int
    counts: BatchCounts
    ended: int
    done: bool
    gpu_seconds: float
    eta_seconds: float | None
    runs: list[Run]
    next_cursor: str | None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Any) -> Batch:
        data = _object(data, "a batch")
        what = f"batch {data.get('id')!r}"
        return cls(
            id=_get(data, "id", str, what),
            created_at=_time(data, "created_at", what),
            total=int(_number(data, "total", what, 0) or 0),
            counts=BatchCounts.from_json(data.get("counts")),
            ended=int(_number(data, "ended", what, 0) or 0),
            done=bool(data.get("done", False)),
            gpu_seconds=float(_number(data, "gpu_seconds", what, 0.0) or 0.0),
            eta_seconds=_number(data, "eta_seconds", what),
            runs=[Run.from_json(r) for r in _optional(data, "runs", list, what) or []],
            next_cursor=_optional(data, "next_cursor", str, what),
            raw=dict(data),
        )


@dataclass(frozen=True)
class BatchItem:
    """The answer to one item of a batch submission, at its place (``index``) in what was submitted.

    Accepted (``status`` 202): ``run`` is its run, ``replayed`` tells its Idempotency-Key had made it
    before. Refused (422, 404, 409, 429...): ``error`` is the problem, as the ApiError it would raise.
    """

    index: int
    status: int
    idempotency_key: str
    run: Run | None = None
    replayed: bool = False
    error: ApiError | None = None

    @property
    def accepted(self) -> bool:
        return self.run is not None

    @classmethod
    def from_json(cls, data: Any, *, key: str, index: int | None = None) -> BatchItem:
        data = _object(data, "a batch item")
        status = int(_get(data, "status", int, "batch item"))
        position = int(_get(data, "index", int, "batch item")) if index is None else index
        replayed = bool(data.get("replayed", False))
        if data.get("run") is not None:
            return cls(position, status, key, run=Run.from_json(data["run"], replayed=replayed), replayed=replayed)
        problem = data.get("problem")
        return cls(position, status, key, error=problem_error(status, problem if isinstance(problem, dict) else None))


@dataclass(frozen=True)
class BatchSubmission:
    """What ``submit_many`` did: every item's answer in input order, and the batches that hold the runs."""

    batch_ids: list[str]
    items: list[BatchItem]

    @property
    def accepted(self) -> int:
        return sum(1 for item in self.items if item.accepted)

    @property
    def refused(self) -> int:
        return len(self.items) - self.accepted

    @property
    def runs(self) -> list[Run]:
        return [item.run for item in self.items if item.run is not None]


@dataclass(frozen=True)
class Workflow:
    """A workflow as the API shows it (``GET /v1/workflows/{id}``): its latest version (or the one asked for),
    its parameters, and, in the detail view, its manifest and graph (``raw`` has every field)."""

    id: str
    version: int
    description: str
    params: dict[str, dict[str, Any]]
    inferred: bool
    manifest: dict[str, Any] | None = None
    graph: dict[str, Any] | None = None
    source: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Any) -> Workflow:
        data = _object(data, "a workflow")
        what = f"workflow {data.get('id')!r}"
        return cls(
            id=_get(data, "id", str, what),
            version=int(_number(data, "version", what, 1) or 1),
            description=str(data.get("description") or ""),
            params=dict(_optional(data, "params", dict, what) or {}),
            inferred=bool(data.get("inferred", False)),
            manifest=_optional(data, "manifest", dict, what),
            graph=_optional(data, "graph", dict, what),
            source=_optional(data, "source", str, what),
            raw=dict(data),
        )


@dataclass(frozen=True)
class WorkflowVersion:
    """One published version of a workflow (``GET /v1/workflows/{id}/versions``)."""

    version: int
    created_at: datetime | None
    source: str
    digest: str
    inferred: bool
    published_by: str | None

    @classmethod
    def from_json(cls, data: Any) -> WorkflowVersion:
        data = _object(data, "a workflow version")
        what = f"version {data.get('version')!r}"
        return cls(
            version=int(_get(data, "version", int, what)),
            created_at=_time(data, "created_at", what),
            source=str(data.get("source") or ""),
            digest=str(data.get("digest") or ""),
            inferred=bool(data.get("inferred", False)),
            published_by=_optional(data, "published_by", str, what),
        )
