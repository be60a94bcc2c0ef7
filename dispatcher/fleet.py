"""The workers as their heartbeats describe them (``keys.WORKERS`` and ``keys.worker(name)``)."""

from __future__ import annotations

from dataclasses import dataclass

from redis import Redis

from dispatcher import keys


class WorkerMode:
    IDLE = "idle"
    BUSY = "busy"  # holds runs (and may have room for more: see slots)
    PAUSED = "paused"  # its ComfyUI does not answer: it takes no run
    DRAINING = "draining"  # stopping: finishes the runs it holds, takes no new one
    WARMING = "warming"  # running its warm-up workflow (or its warm-up failed: see warmup_error): takes no run


@dataclass(frozen=True)
class WorkerInfo:
    name: str
    comfyui_url: str
    comfyui_healthy: bool
    state: str  # WorkerMode, or "offline" when its heartbeat expired
    current_run: str  # the run its ComfyUI executes now (else the first it holds)
    last_seen: float
    slots: int = 1  # runs it may hold at once (its pipeline depth)
    runs: tuple[str, ...] = ()  # the runs it holds, in the order it took them
    caps: str = ""  # the digest of its ComfyUI's capability set (dispatcher.routing), '' before it published one
    warmup_error: str = ""  # why its warm-up failed ('' when it did not, or has not yet)
    checkpoint: str = ""  # the diffusion model its ComfyUI last ran ("checkpoints/x.safetensors"), '' for none

    @property
    def ready(self) -> bool:
        """Alive and able to take runs (idle or busy, its ComfyUI answering)."""
        return self.state in (WorkerMode.IDLE, WorkerMode.BUSY) and self.comfyui_healthy


def read_workers(redis: Redis, *, since: float) -> list[WorkerInfo]:
    """Workers that beat since ``since`` (a Unix time), by name; ``redis`` decodes responses."""
    seen: list[tuple[str, float]] = redis.zrangebyscore(  # type: ignore[assignment]
        keys.WORKERS, since, "+inf", withscores=True
    )
    pipe = redis.pipeline(transaction=False)
    for name, _ in seen:
        pipe.hgetall(keys.worker(name))
    states: list[dict[str, str]] = pipe.execute()
    workers = []
    for (name, beat), state in zip(seen, states, strict=True):
        workers.append(
            WorkerInfo(
                name=name,
                comfyui_url=state.get("comfyui_url", ""),
                comfyui_healthy=state.get("comfyui_healthy") == "1",
                state=state.get("state", WorkerMode.IDLE) if state else "offline",
                current_run=state.get("current_run", ""),
                last_seen=float(state.get("last_seen") or beat),
                slots=int(state.get("slots") or 1),
                runs=tuple(r for r in state.get("runs", "").split(",") if r),
                caps=state.get("caps", ""),
                checkpoint=state.get("checkpoint", ""),
                warmup_error=state.get("warmup_error", ""),
            )
        )
    return sorted(workers, key=lambda w: w.name)
