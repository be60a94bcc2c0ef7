"""What a worker process holds for its whole life, shared by every run it executes.

RQ calls the job function by name with only the run id; the function finds
the process's connections, ComfyUI client and output store here. Built once
at start (``install``), so each run reuses keep-alive connections.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from rq import Queue

from dispatcher.comfyui.client import ComfyClient
from dispatcher.connections import Connections
from dispatcher.lease import Leases
from dispatcher.recovery import Reaper
from dispatcher.runs import RunStore
from dispatcher.settings import Settings
from dispatcher.storage import OutputStore, make_store


@dataclass
class WorkerState:
    """What the executing thread, the heartbeat and the cancel watcher share."""

    current_run: str = ""
    current_prompt: str = ""
    comfyui_healthy: bool = True
    healthy: threading.Event = field(default_factory=threading.Event)  # set while ComfyUI answers
    canceled: threading.Event = field(default_factory=threading.Event)  # the current run was canceled
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self, run_id: str, prompt_id: str) -> None:
        with self.lock:
            self.current_run, self.current_prompt = run_id, prompt_id
            self.canceled.clear()

    def finish(self) -> None:
        with self.lock:
            self.current_run, self.current_prompt = "", ""
            self.canceled.clear()


@dataclass
class WorkerContext:
    name: str
    settings: Settings
    conns: Connections
    client: ComfyClient
    store: OutputStore
    leases: Leases
    runs: RunStore
    queue: Queue
    reaper: Reaper
    state: WorkerState = field(default_factory=WorkerState)

    @classmethod
    def build(cls, settings: Settings, name: str, *, store: OutputStore | None = None) -> WorkerContext:
        conns = Connections.from_url(settings.redis_url)
        leases = Leases(conns.text, ttl_seconds=settings.lease_seconds, run_ttl_seconds=settings.run_ttl_seconds)
        return cls(
            name=name,
            settings=settings,
            conns=conns,
            client=ComfyClient(settings.comfyui_url, timeout=settings.comfyui_timeout),
            store=store or make_store(settings),
            leases=leases,
            runs=RunStore(conns.text),
            queue=Queue(settings.queue_name, connection=conns.raw),
            reaper=Reaper(
                conns.text,
                leases,
                dispatch_timeout=settings.dispatch_timeout,
                retry_base=settings.retry_base,
                retry_cap=settings.retry_cap,
            ),
        )

    def close(self) -> None:
        self.client.close()
        self.conns.close()


_current: WorkerContext | None = None


def install(ctx: WorkerContext) -> None:
    global _current
    _current = ctx


def current() -> WorkerContext:
    if _current is None:
        raise RuntimeError("no worker context: run jobs through `comfy-dispatch worker`")
    return _current
