"""What a worker process holds for its whole life, shared by every run it executes.

A run's job function gets only the run id and its dispatch number; it finds
the process's connections, ComfyUI client, websocket, pipeline and output store
here. Built once at start (``install``), so each run reuses keep-alive connections
and the one websocket.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from rq import Queue

from dispatcher.comfyui.client import ComfyClient
from dispatcher.comfyui.stream import EventHub
from dispatcher.connections import Connections
from dispatcher.lease import Leases
from dispatcher.routing.store import CapabilityStore, capabilities_ttl
from dispatcher.runs import RunStore
from dispatcher.scheduling.recovery import Reaper
from dispatcher.settings import Settings
from dispatcher.storage import OutputStore, make_store
from worker.pipeline import Pipeline, Runners


def _set_event() -> threading.Event:
    event = threading.Event()
    event.set()
    return event


@dataclass
class WorkerState:
    """What the RQ loop, the runs' threads, the heartbeat and the cancel watcher share."""

    comfyui_healthy: bool = True
    healthy: threading.Event = field(default_factory=threading.Event)  # set while ComfyUI answers
    draining: bool = False  # stopping: takes no new run, finishes the ones it holds
    lock: threading.Lock = field(default_factory=threading.Lock)
    caps: str = ""  # the digest of its ComfyUI's capability set as last published ('' before the first)
    caps_read_at: float | None = None  # time.monotonic() of that discovery; None: read again at the next beat
    caps_failing: bool = False  # the last read failed (said once in the log, not at every beat)
    warm: threading.Event = field(default_factory=_set_event)  # clear while warming up (worker.warmup)
    warmup_error: str = ""  # why the last warm-up failed
    checkpoint: str = ""  # the diffusion model of the last run posted ("checkpoints/x.safetensors"), '' for none


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
    hub: EventHub
    pipeline: Pipeline
    runners: Runners  # one thread per run held: the pipeline's depth
    capabilities: CapabilityStore
    state: WorkerState = field(default_factory=WorkerState)

    @classmethod
    def build(cls, settings: Settings, name: str, *, store: OutputStore | None = None) -> WorkerContext:
        conns = Connections.from_url(settings.redis_url)
        leases = Leases(conns.text, ttl_seconds=settings.lease_seconds, run_ttl_seconds=settings.run_ttl_seconds)
        client = ComfyClient(settings.comfyui_url, timeout=settings.comfyui_timeout)
        return cls(
            name=name,
            settings=settings,
            conns=conns,
            client=client,
            # The same client id across restarts of a worker: prompts its last life posted report here too.
            hub=EventHub(client.ws_url, f"comfy-dispatch-worker-{name}", connect_timeout=settings.comfyui_timeout),
            pipeline=Pipeline(settings.pipeline_depth),
            runners=Runners(settings.pipeline_depth),
            store=store or make_store(settings),
            leases=leases,
            runs=RunStore(conns.text),
            capabilities=CapabilityStore(conns.text, ttl_seconds=capabilities_ttl(settings)),
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
        self.runners.shutdown()
        self.hub.close()
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
