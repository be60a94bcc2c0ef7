"""Response (and documented request) shapes of the native API v1, as they appear in /docs."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from dispatcher.outputs import INLINE_TEXT_CHARS, Kind
from dispatcher.runs import Priority, RunStatus


class WorkflowView(BaseModel):
    id: str
    version: int = Field(1, description="the latest version (GET /v1/workflows/{id}/versions), which runs use")
    description: str
    params: dict[str, dict[str, Any]] = Field(description="parameter name -> type, required, default, min, max...")
    inferred: bool = Field(False, description="the parameters were inferred from the graph (it came with no manifest)")


class WorkflowDetailView(WorkflowView):
    created_at: str | None = Field(None, description="when this version was published (RFC 3339, UTC)")
    source: str | None = Field(None, description='"bundled" (a folder of workflows/) or "api" (PUT /v1/workflows/{id})')
    manifest: dict[str, Any] = Field(default_factory=dict, description="the manifest runs are bound by (as inferred)")
    graph: dict[str, Any] = Field(default_factory=dict, description="the ComfyUI graph, API format")
    capable_workers: int | None = Field(
        description="ready workers whose ComfyUI has every node class and model file a run with the parameters' "
        "defaults needs (a required parameter with no default counts with the workflow's own value, unless it "
        "names a model file: then null, as what a run needs depends on it); null too while no worker has said "
        "what its ComfyUI can run"
    )


class WorkflowList(BaseModel):
    workflows: list[WorkflowView]


class WorkflowVersionView(BaseModel):
    version: int
    created_at: str = Field(description="RFC 3339, UTC")
    source: str = Field(description='"bundled" (a folder of workflows/) or "api" (PUT /v1/workflows/{id})')
    digest: str = Field(description="the same for the same graph and manifest")
    inferred: bool = Field(description="its manifest was inferred from the graph")
    published_by: str | None = Field(None, description="the id of the API key that published it")


class WorkflowVersionsView(BaseModel):
    id: str
    latest: int = Field(description="the version runs use unless they name one")
    retired: bool = Field(description="DELETE retired it: new runs are refused until a version is published again")
    versions: list[WorkflowVersionView] = Field(description="oldest first")


class OutputView(BaseModel):
    node: str
    filename: str
    url: str = Field(description="absolute URL of the file (a text output's too: its text as a UTF-8 file)")
    content_type: str
    size: int = Field(description="bytes")
    kind: Kind = Field(
        description="what it is, by its content type: image (animated WEBP/PNG/GIF too), video, audio, text (a "
        "node's text output, e.g. PreviewAny), or file (3-D models and anything else)"
    )
    text: str | None = Field(
        None,
        description=f"a text output's string, inline (its first {INLINE_TEXT_CHARS:,} characters; the whole text "
        "is at url); null for files",
    )
    text_truncated: bool = Field(False, description="text is only the start of a longer text (the whole is at url)")


class MissingView(BaseModel):
    name: str = Field(description="a node class, or a model file")
    folder: str | None = Field(description="the model folder of a file; null for a node class")


class RunView(BaseModel):
    id: str
    workflow: str
    workflow_version: int | None = Field(
        None, description="the version of the workflow it runs (GET /v1/workflows/{id}/versions); null if not recorded"
    )
    status: RunStatus
    priority: Priority
    progress: float = Field(ge=0, le=1)
    queue_position: int | None = Field(description="0-based place among all queued runs; null unless queued")
    params: dict[str, Any]
    outputs: list[OutputView]
    error: dict[str, Any] | None
    created_at: str | None = Field(description="RFC 3339, UTC")
    started_at: str | None
    finished_at: str | None
    attempts: int
    max_attempts: int
    cached: bool = Field(False, description="the outputs are an earlier identical run's (result cache): no GPU ran")
    cached_from: str | None = Field(None, description="the id of that earlier run; null unless cached")
    gpu_seconds: float = Field(
        0.0, description="how long ComfyUI executed it (execution_start to its end, every attempt), in seconds"
    )
    eta_seconds: float | None = Field(
        None,
        description="seconds until it will likely have ended, from its place in the queue, the ready workers and "
        "its workflow's recent GPU-seconds; null when ended, or with no basis (no ready worker, no run of it yet)",
    )
    batch_id: str | None = Field(None, description="the batch submission that created it (POST /v1/runs/batch)")
    waiting_for: list[MissingView] | None = Field(
        None,
        description="(GET /v1/runs/{id}) queued, and no ready worker's ComfyUI can run it: what the nearest one "
        "lacks (node classes, model files with their folder; empty when no worker is ready); null otherwise",
    )


class QueuesView(BaseModel):
    queues: dict[str, int] = Field(description="queued runs per priority: high, normal, low")
    total: int
    waiting_for_capability: int = Field(
        0,
        description="queued runs no ready worker's ComfyUI can run now (a node class or model file missing; "
        "COMFY_DISPATCH_UNSERVABLE_RUNS=queue, or the last capable worker left), of at most 10,000 looked at; "
        "0 while no ready worker has published what it can run",
    )


class WorkerView(BaseModel):
    name: str
    comfyui_url: str | None = Field(description="null once the worker's record has expired (offline)")
    health: Literal["healthy", "unhealthy", "offline"] = Field(description="whether its ComfyUI answers")
    state: Literal["idle", "busy", "paused", "draining", "warming", "offline"] = Field(
        description="paused: its ComfyUI does not answer, so it takes no run until it does; "
        "draining: it is stopping, finishing the runs it holds; warming: it runs its warm-up workflow "
        "(COMFY_DISPATCH_WARMUP_WORKFLOW) and takes no run until that succeeded"
    )
    warmup_error: str | None = Field(None, description="why its warm-up failed (it takes no run; tried again)")
    current_run: str | None = Field(description="the run its ComfyUI executes now (else the first one it holds)")
    runs: list[str] = Field(
        default_factory=list, description="the runs it holds: executing, posted behind it, or being stored"
    )
    slots: int = Field(1, description="how many runs it may hold at once (its pipeline depth)")
    last_seen: str = Field(description="RFC 3339, UTC")
    capabilities: str | None = Field(
        description="the digest of what its ComfyUI can run (node classes, model files): workers with the same "
        "digest have the same; null before it could read its ComfyUI"
    )
    models: dict[str, int] | None = Field(
        description='model files its ComfyUI has, counted per folder ({"checkpoints": 2, "loras": 5}; folders '
        "with none left out); null while its capabilities are unknown"
    )
    nodes: int | None = Field(description="node classes its ComfyUI has; null while its capabilities are unknown")
    checkpoint: str | None = Field(
        description='the diffusion model of the last run it posted ("checkpoints/x.safetensors"): the one its '
        "ComfyUI keeps loaded; null before any"
    )


class WorkersView(BaseModel):
    workers: list[WorkerView]


class DayUsageView(BaseModel):
    date: str = Field(description="a UTC day, YYYY-MM-DD")
    runs: int = Field(description="runs that ended that day, of those that reached a worker")
    gpu_seconds: float = Field(description="seconds ComfyUI spent executing the tenant's runs that day")


class UsageTotalView(BaseModel):
    runs: int
    gpu_seconds: float


class UsageView(BaseModel):
    tenant: str
    days: list[DayUsageView] = Field(description="every day of the range, oldest first (zeros where nothing ran)")
    total: UsageTotalView


class StatusView(BaseModel):
    status: str


class BatchItemView(BaseModel):
    index: int = Field(description="the item's place in the request, from 0")
    status: int = Field(description="202 accepted (or replayed), else the HTTP status of its problem")
    run: RunView | None = Field(default=None, description="the run, when accepted")
    replayed: bool = Field(default=False, description="its idempotency_key named a run stored before: that run")
    problem: dict[str, Any] | None = Field(default=None, description="why it was refused (problem+json), when refused")


class BatchSubmitted(BaseModel):
    batch_id: str | None = Field(description="the batch of the runs this request created; null if it created none")
    accepted: int
    refused: int
    items: list[BatchItemView] = Field(description="one per item of the request, in its order")


class BatchView(BaseModel):
    id: str
    created_at: str = Field(description="RFC 3339, UTC")
    total: int = Field(description="runs the batch created")
    counts: dict[str, int] = Field(description="its runs by status: queued, running, succeeded, failed, canceled")
    ended: int
    done: bool = Field(description="every run has ended (its on_batch_done_url, if any, was called then)")
    gpu_seconds: float = Field(description="ComfyUI's execution time of its runs so far, in seconds")
    eta_seconds: float | None = Field(description="seconds until its last run will likely have ended; null if no basis")
    on_batch_done_url: str | None = None
    runs: list[RunView] = Field(description="a page of its runs, in the order of the request's items")
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page; null on the last")


class RunList(BaseModel):
    runs: list[RunView] = Field(description="newest first")
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page; null when there is no more")
