"""Run records: what a run is, and how it is kept in Redis.

A run is one execution request of a named workflow. Its record is a Redis
hash (``keys.run``); its bound graph sits beside it (``keys.run_graph``) so
reading a run's status never drags the whole graph along. Only the lease
holder changes a running record (see :mod:`dispatcher.lease`).
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from redis import Redis

from dispatcher import keys
from dispatcher.outputs import kind_of
from dispatcher.routing.capabilities import checkpoint_tag


class RunStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"

    @property
    def terminal(self) -> bool:
        return self in (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELED)


class Priority(StrEnum):
    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"


PRIORITIES: tuple[Priority, ...] = (Priority.HIGH, Priority.NORMAL, Priority.LOW)


@dataclass(frozen=True)
class Output:
    """One stored output of a run: a file ComfyUI saved, or a text a node showed (stored as a text file)."""

    node: str
    filename: str
    content_type: str
    size: int
    key: str  # where the output store keeps it
    subfolder: str = ""
    type: str = "output"  # ComfyUI's folder type: output or temp
    kind: str = ""  # image, video, audio, text or file: by default, of its content type (dispatcher.outputs)
    text: str | None = None  # a text output's string (its first INLINE_TEXT_CHARS characters)
    ui_key: str = ""  # the key of the node's UI output that listed it (images, gifs, audio, 3d, text)

    def __post_init__(self) -> None:
        # Records written before outputs had a kind get it from their content type, as new ones do.
        if not self.kind:
            object.__setattr__(self, "kind", kind_of(self.content_type))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Output:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


@dataclass
class Run:
    """A run record as the API and workers see it."""

    id: str
    workflow: str
    priority: Priority = Priority.NORMAL
    status: RunStatus = RunStatus.QUEUED
    params: dict[str, Any] = field(default_factory=dict)
    progress: float = 0.0
    error: dict[str, Any] | None = None
    outputs: list[Output] = field(default_factory=list)
    created_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    attempts: int = 0
    max_attempts: int = 3
    timeout: float = 3600.0
    prompt_id: str = ""
    client_id: str = ""
    worker: str = ""
    comfyui_url: str = ""
    node: str = ""  # the node ComfyUI is executing now
    tenant: str = "default"
    dispatches: int = 0  # times the scheduler handed it to RQ; the RQ job carries it, stale jobs are fenced off
    cancel_requested: bool = False
    callbacks: dict[str, str] | None = None  # Comflowy's callback_urls: on_result_url, on_progress_event_url
    cached_from: str = ""  # a result-cache hit: the run whose outputs it carries
    gpu_seconds: float = 0.0  # how long ComfyUI executed it, over all its attempts (written by dispatcher.lease)
    batch_id: str = ""  # the batch submission that created it (dispatcher.batches)
    needs: str = ""  # what it needs of a ComfyUI (dispatcher.routing.capabilities.Needs.to_text), "" for nothing known
    checkpoint: str = ""  # the diffusion model it loads ("checkpoints/x.safetensors"), '' for none
    workflow_version: int = 0  # the version of its workflow it runs (dispatcher.workflows); 0: not recorded

    def to_redis(self) -> dict[str, str]:
        """The record as flat strings for HSET."""
        return {
            "id": self.id,
            "workflow": self.workflow,
            **({"workflow_version": str(self.workflow_version)} if self.workflow_version else {}),
            "priority": self.priority.value,
            "status": self.status.value,
            "params": json.dumps(self.params),
            "progress": repr(self.progress),
            "error": json.dumps(self.error) if self.error is not None else "",
            "outputs": json.dumps([asdict(o) for o in self.outputs]),
            "created_at": repr(self.created_at),
            "started_at": "" if self.started_at is None else repr(self.started_at),
            "finished_at": "" if self.finished_at is None else repr(self.finished_at),
            "attempts": str(self.attempts),
            "max_attempts": str(self.max_attempts),
            "timeout": repr(self.timeout),
            "prompt_id": self.prompt_id,
            "client_id": self.client_id,
            "worker": self.worker,
            "comfyui_url": self.comfyui_url,
            "node": self.node,
            "tenant": self.tenant,
            "dispatches": str(self.dispatches),
            # present only when set: the event scripts test its existence to feed the webhook sender
            **({"callbacks": json.dumps(self.callbacks)} if self.callbacks else {}),
            **({"cached_from": self.cached_from} if self.cached_from else {}),
            # present only when set: the scripts that end a run count it in its batch (dispatcher.batches)
            **({"batch": self.batch_id} if self.batch_id else {}),
            **({"needs": self.needs} if self.needs else {}),
            **({"checkpoint": self.checkpoint} if self.checkpoint else {}),
            # how the dispatch script compares it with the checkpoint a worker has loaded (dispatcher.routing)
            **({"checkpoint_tag": checkpoint_tag(self.checkpoint)} if self.checkpoint else {}),
        }

    @classmethod
    def from_redis(cls, data: dict[str, str]) -> Run:
        def opt_float(name: str) -> float | None:
            value = data.get(name, "")
            return float(value) if value else None

        return cls(
            id=data["id"],
            workflow=data["workflow"],
            workflow_version=int(data.get("workflow_version") or 0),
            priority=Priority(data.get("priority", "normal")),
            status=RunStatus(data["status"]),
            params=json.loads(data.get("params") or "{}"),
            progress=float(data.get("progress") or 0.0),
            error=json.loads(data["error"]) if data.get("error") else None,
            outputs=[Output.from_dict(o) for o in json.loads(data.get("outputs") or "[]")],
            created_at=float(data.get("created_at") or 0.0),
            started_at=opt_float("started_at"),
            finished_at=opt_float("finished_at"),
            attempts=int(data.get("attempts") or 0),
            max_attempts=int(data.get("max_attempts") or 3),
            timeout=float(data.get("timeout") or 3600.0),
            prompt_id=data.get("prompt_id", ""),
            client_id=data.get("client_id", ""),
            worker=data.get("worker", ""),
            comfyui_url=data.get("comfyui_url", ""),
            node=data.get("node", ""),
            tenant=data.get("tenant", "default"),
            dispatches=int(data.get("dispatches") or 0),
            cancel_requested=data.get("cancel_requested") == "1",
            callbacks=json.loads(data["callbacks"]) if data.get("callbacks") else None,
            cached_from=data.get("cached_from", ""),
            batch_id=data.get("batch", ""),
            needs=data.get("needs", ""),
            checkpoint=data.get("checkpoint", ""),
            gpu_seconds=float(data.get("gpu_seconds") or 0.0),
        )


def new_run(
    workflow: str,
    params: dict[str, Any],
    *,
    priority: Priority = Priority.NORMAL,
    max_attempts: int = 3,
    timeout: float = 3600.0,
    tenant: str = "default",
    run_id: str | None = None,
    now: float | None = None,
) -> Run:
    """A fresh queued run with its own ids.

    ``prompt_id`` and ``client_id`` are fixed for the run's life: a retry on the
    same ComfyUI finds the earlier attempt's prompt in ``/history`` or ``/queue``
    by its id instead of posting the graph again.
    """
    rid = run_id or new_run_id()
    return Run(
        id=rid,
        workflow=workflow,
        priority=priority,
        params=params,
        created_at=time.time() if now is None else now,
        max_attempts=max_attempts,
        timeout=timeout,
        tenant=tenant,
        prompt_id=str(uuid.uuid4()),
        client_id=f"comfy-dispatch-{rid}",
    )


def new_run_id() -> str:
    """A url-safe, unique run id (also used inside output file names)."""
    return uuid.uuid4().hex


def run_of(record: dict[str, str]) -> Run | None:
    """The run a record (HGETALL) describes, or None for no record (expired, never existed, half-written)."""
    if not record or "status" not in record:
        return None
    return Run.from_redis(record)


class RunStore:
    """Reads run records; writes the ones that need no lease (creation)."""

    def __init__(self, redis: Redis) -> None:
        # ``redis`` must decode responses (str, not bytes).
        self.redis = redis

    def get(self, run_id: str) -> Run | None:
        return run_of(self.redis.hgetall(keys.run(run_id)))  # type: ignore[arg-type]

    def graph(self, run_id: str) -> dict[str, Any]:
        raw = self.redis.get(keys.run_graph(run_id))
        if raw is None:
            raise KeyError(run_id)
        graph: dict[str, Any] = json.loads(raw)  # type: ignore[arg-type]
        return graph

    def queue_depths(self) -> dict[str, int]:
        """Queued runs per priority, over every tenant's backlog (retries waiting out a backoff included)."""
        return {p.value: sum(self._backlog_sizes(p).values()) for p in PRIORITIES}

    def queue_position(self, run: Run) -> int | None:
        """About how many runs will be dispatched before ``run`` (0: it is next), or None if not queued.

        Every higher priority first; within its own, round-robin between tenants hands each other
        tenant up to as many turns as the run's own tenant takes before it (one more for a tenant
        whose turn comes earlier in the rotation).
        """
        if run.status is not RunStatus.QUEUED:
            return None
        rank = self.redis.zrank(keys.backlog(run.tenant, run.priority), run.id)
        if rank is None:
            return None  # already handed to a worker
        own = int(rank)  # type: ignore[arg-type]
        ahead = 0
        for priority in PRIORITIES:
            sizes = self._backlog_sizes(priority)
            if priority is run.priority:
                order = list(sizes)
                mine = order.index(run.tenant) if run.tenant in order else len(order)
                turns = (min(n, own + (1 if i < mine else 0)) for i, n in enumerate(sizes.values()) if i != mine)
                return ahead + own + sum(turns)
            ahead += sum(sizes.values())
        return None

    def _backlog_sizes(self, priority: Priority) -> dict[str, int]:
        tenants: list[str] = self.redis.lrange(keys.rotation(priority), 0, -1)  # type: ignore[assignment]
        if not tenants:
            return {}
        pipe = self.redis.pipeline(transaction=False)
        for tenant in tenants:
            pipe.zcard(keys.backlog(tenant, priority))
        return dict(zip(tenants, (int(n) for n in pipe.execute()), strict=True))
