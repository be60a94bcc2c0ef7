"""Prometheus metrics of every Comfy Dispatch process: one definition each, and the gauges read from Redis.

Counters and histograms are counted where the thing happens, in a long-lived process: workers (and
the webhooks process) are RQ ``SimpleWorker``s, so a job runs in the worker process itself and
nothing is counted in a forked child that would take its counts with it (RQ-NOTES). Every process
exposes the default registry; a metric a process never touches stays at zero there, which
Prometheus sums harmlessly. State shared by all processes (queues, workers, buckets) is read from
Redis at scrape time by :class:`RedisCollector`, which only the API serves: one truth, not one copy
per process.

Labels come from small fixed sets (priority, status, reason, outcome, state) or from lists an
operator controls (workflows, tenants, workers); never a run id.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.metrics import disable_created_metrics
from prometheus_client.registry import Collector
from redis import Redis
from redis.exceptions import RedisError
from rq.queue import Queue
from rq.registry import ScheduledJobRegistry

from dispatcher import keys
from dispatcher.errors import (
    ComfyUIError,
    ComfyUIExecutionError,
    ComfyUIInterrupted,
    ComfyUIUnavailable,
    InputImageError,
)
from dispatcher.fleet import WorkerInfo, read_workers
from dispatcher.ratelimit import leak
from dispatcher.routing.store import CapabilityStore, FleetCapabilities, capabilities_ttl
from dispatcher.routing.waiting import count_unservable
from dispatcher.runs import PRIORITIES
from dispatcher.settings import Settings
from dispatcher.tenants import DEFAULT_TENANT

log = logging.getLogger(__name__)

PREFIX = "comfy_dispatch_"
BUCKETS: tuple[float, ...] = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600)
"""Histogram buckets, in seconds: runs take from a fraction of a second to an hour."""

REJECT_REASONS = ("rate_limit", "queue_full", "validation", "auth", "not_found", "too_large", "conflict")
RETRY_REASONS = ("comfyui_unavailable", "out_of_memory", "interrupted", "input_unavailable", "worker_died", "other")
OUTCOMES = ("delivered", "retrying", "gave_up")
WORKER_STATES = ("idle", "busy", "paused", "draining", "offline")

# A worker silent this long is gone (scaled down, renamed), not offline: the window /v1/workers uses too.
WORKER_WINDOW_SECONDS = 3600.0

# _created series double every counter and histogram for a start time Prometheus does not need.
disable_created_metrics()  # type: ignore[no-untyped-call]

RUNS_SUBMITTED = Counter(
    PREFIX + "runs_submitted", "Runs accepted (result cache hits included).", ["workflow", "priority"]
)
RUNS_REJECTED = Counter(PREFIX + "runs_rejected", "Run submissions refused, by reason.", ["reason"])
RUNS_COMPLETED = Counter(
    PREFIX + "runs_completed", "Runs ended, counted by the process that ended them.", ["workflow", "status"]
)
RUN_RETRIES = Counter(PREFIX + "run_retries", "Attempts that failed transiently and were queued again.", ["reason"])
RUNS_DISPATCHED = Counter(PREFIX + "runs_dispatched", "Runs handed to RQ by the scheduler.", ["priority"])
RUNS_ROUTED = Counter(
    PREFIX + "runs_routed",
    "Runs dispatched, by whether their worker had their checkpoint loaded (hit), must load it (switch), or "
    "neither is known (none: no checkpoint, or affinity off).",
    ["model"],
)
WEBHOOK_DELIVERIES = Counter(PREFIX + "webhook_deliveries", "Webhook delivery attempts, by outcome.", ["outcome"])
OUTPUT_BYTES = Counter(PREFIX + "output_bytes", "Bytes of run outputs stored.")
GPU_SECONDS = Counter(
    PREFIX + "gpu_seconds", "Seconds ComfyUI spent executing runs (every attempt), by tenant.", ["tenant"]
)
MODEL_SWITCHES = Counter(
    PREFIX + "model_switches",
    "Runs posted to this worker's ComfyUI with another diffusion model than the run before (a load on its GPU).",
)

QUEUE_WAIT = Histogram(
    PREFIX + "queue_wait_seconds",
    "From submission to a worker's claim (first attempts).",
    ["priority"],
    buckets=BUCKETS,
)
COMFYUI_EXECUTION = Histogram(
    PREFIX + "comfyui_execution_seconds",
    "ComfyUI's own execution time of a successful run (execution_start to execution_success).",
    ["workflow"],
    buckets=BUCKETS,
)
OUTPUT_UPLOAD = Histogram(PREFIX + "output_upload_seconds", "Storing all outputs of a run.", buckets=BUCKETS)
RUN_DURATION = Histogram(
    PREFIX + "run_duration_seconds", "From submission to the run's end.", ["workflow", "status"], buckets=BUCKETS
)

# Children of fixed label sets exist from the start, so rate() sees a 0 before the first event.
for _reason in REJECT_REASONS:
    RUNS_REJECTED.labels(_reason)
for _reason in RETRY_REASONS:
    RUN_RETRIES.labels(_reason)
for _priority in PRIORITIES:
    RUNS_DISPATCHED.labels(_priority.value)
for _model in ("hit", "switch", "none"):
    RUNS_ROUTED.labels(_model)
for _outcome in OUTCOMES:
    WEBHOOK_DELIVERIES.labels(_outcome)

# The worker's own state, read when scraped; registered by the worker process only.
WORKER_COMFYUI_UP = Gauge(PREFIX + "worker_comfyui_up", "1 while this worker's ComfyUI answers.", registry=None)
WORKER_BUSY = Gauge(PREFIX + "worker_busy", "1 while this worker holds a run.", registry=None)
WORKER_HELD = Gauge(
    PREFIX + "worker_runs_held",
    "Runs this worker holds: posted to its ComfyUI, executing or being stored.",
    registry=None,
)
_worker_gauges_registered = False


def expose_worker_state(comfyui_up: Callable[[], bool], held: Callable[[], int]) -> None:
    """Serve this worker's ComfyUI health and the runs it holds as gauges read at scrape time (once per process)."""
    global _worker_gauges_registered
    WORKER_COMFYUI_UP.set_function(lambda: float(comfyui_up()))
    WORKER_BUSY.set_function(lambda: float(held() > 0))
    WORKER_HELD.set_function(lambda: float(held()))
    if not _worker_gauges_registered:
        for gauge in (WORKER_COMFYUI_UP, WORKER_BUSY, WORKER_HELD):
            REGISTRY.register(gauge)
        _worker_gauges_registered = True


def serve(port: int, host: str) -> None:
    """Serve the default registry on ``http://host:port/metrics`` from a daemon thread of this process."""
    start_http_server(port, addr=host)
    log.info("metrics on http://%s:%d/metrics", host, port)


def observe_run_end(workflow: str, status: str, duration: float) -> None:
    """A run ended with ``status`` (succeeded, failed, canceled), ``duration`` seconds after it was submitted."""
    RUNS_COMPLETED.labels(workflow, status).inc()
    RUN_DURATION.labels(workflow, status).observe(max(0.0, duration))


def retry_reason(exc: ComfyUIError) -> str:
    """The ``reason`` label of a retry after ``exc``."""
    if isinstance(exc, ComfyUIUnavailable):
        return "comfyui_unavailable"
    if isinstance(exc, ComfyUIExecutionError) and "OutOfMemory" in exc.exception_type:
        return "out_of_memory"
    if isinstance(exc, ComfyUIInterrupted):
        return "interrupted"
    if isinstance(exc, InputImageError):
        return "input_unavailable"
    return "other"


# -- gauges read from Redis at scrape time ------------------------------------------------------------------------


@dataclass
class Snapshot:
    """The shared state the gauges show, as read at one moment (``now``, Redis's clock)."""

    now: float
    depth: dict[str, int] = field(default_factory=dict)  # priority -> queued runs
    oldest: dict[str, float] = field(default_factory=dict)  # priority -> creation time of the oldest queued run
    in_flight: int = 0
    dead_letter: int = 0
    workers: list[WorkerInfo] = field(default_factory=list)
    admission: dict[str, float] = field(default_factory=dict)  # tenant -> level of its fullest API key bucket
    dispatch: dict[str, float] = field(default_factory=dict)  # tenant -> level of its dispatch bucket
    webhook_backlog: int = 0
    waiting_for_capability: int = 0  # queued runs no ready worker can run (dispatcher.routing.waiting)


def read_snapshot(
    redis: Redis, settings: Settings, *, key_owners: Mapping[str, str] | None = None, now: float | None = None
) -> Snapshot:
    """Read the state in a few pipelined round trips (``redis`` decodes responses).

    ``key_owners`` adds API key ids that have no record (the auth-disabled principal) with their tenant.
    """
    webhook_queue = Queue.redis_queue_namespace_prefix + settings.webhook_queue
    pipe = redis.pipeline(transaction=False)
    pipe.time()
    for priority in PRIORITIES:
        pipe.lrange(keys.rotation(priority), 0, -1)
    # Runs waiting out a retry backoff are queued too. The set holds only retries of the last retry_cap
    # seconds, so reading it whole stays cheap.
    pipe.zrange(keys.DELAYED, 0, -1)
    pipe.zcard(keys.INFLIGHT)
    pipe.zcard(keys.DEAD_LETTER)
    pipe.smembers(keys.TENANTS)
    pipe.smembers(keys.API_KEYS)
    pipe.llen(webhook_queue)
    pipe.zcard(ScheduledJobRegistry.key_template.format(settings.webhook_queue))
    pipe.xinfo_groups(keys.WEBHOOK_EVENTS)  # an error until the first webhooks process creates the stream
    clock, *rotations, delayed, in_flight, dead, tenant_set, key_ids, queued_hooks, scheduled_hooks, groups = (
        pipe.execute(raise_on_error=False)
    )
    snap = Snapshot(now=now if now is not None else float(clock[0]) + float(clock[1]) / 1e6)
    snap.in_flight, snap.dead_letter = int(in_flight), int(dead)
    snap.webhook_backlog = int(queued_hooks) + int(scheduled_hooks) + _relay_backlog(groups)
    owners = dict(key_owners or {})
    tenants = sorted(set(tenant_set) | {DEFAULT_TENANT} | set(owners.values()))
    key_list = sorted(key_ids)
    bucket_keys = [*key_list, *(k for k in owners if k not in key_ids)]

    pipe = redis.pipeline(transaction=False)
    heads = [(p.value, t) for p, ts in zip(PRIORITIES, rotations, strict=True) for t in dict.fromkeys(ts)]
    for name, tenant in heads:
        pipe.zcard(keys.backlog(tenant, name))
        pipe.zrange(keys.backlog(tenant, name), 0, 0, withscores=True)
    for run_id in delayed:
        pipe.hmget(keys.run(run_id), "priority", "created_at")
    for key_id in key_list:
        pipe.hget(keys.api_key(key_id), "tenant")
    for key_id in bucket_keys:
        pipe.hmget(keys.bucket("submit", key_id), "level", "ts")
    for tenant in tenants:
        pipe.hmget(keys.tenant(tenant), "submit_rate", "dispatch_rate")
        pipe.hmget(keys.bucket("dispatch", tenant), "level", "ts")
    replies = iter(pipe.execute())

    snap.depth = {p.value: 0 for p in PRIORITIES}
    for name, _ in heads:
        size, head = int(next(replies)), next(replies)
        snap.depth[name] += size
        if head:
            _older(snap.oldest, name, float(head[0][1]))
    for _ in delayed:
        name, created = next(replies)
        if name in snap.depth:  # else it ended or expired since: not queued
            snap.depth[name] += 1
            _older(snap.oldest, name, float(created or snap.now))
    owners.update({k: t for k in key_list if (t := next(replies))})
    submit_buckets = {k: next(replies) for k in bucket_keys}
    for tenant in tenants:
        submit_rate, dispatch_rate = next(replies)
        dispatch_bucket = next(replies)
        rate = float(submit_rate or settings.submit_rate)
        levels = [_level(b, rate, snap.now) for k, b in submit_buckets.items() if owners.get(k) == tenant]
        snap.admission[tenant] = max(levels, default=0.0)
        snap.dispatch[tenant] = _level(dispatch_bucket, float(dispatch_rate or settings.dispatch_rate), snap.now)
    snap.workers = read_workers(redis, since=snap.now - WORKER_WINDOW_SECONDS)
    if any(w.caps for w in snap.workers):  # routing by capability: some queued run may have no worker to go to
        fleet = FleetCapabilities(CapabilityStore(redis, ttl_seconds=capabilities_ttl(settings)), lambda: snap.workers)
        snap.waiting_for_capability = count_unservable(redis, fleet).runs
    return snap


def _older(oldest: dict[str, float], priority: str, created: float) -> None:
    oldest[priority] = min(created, oldest.get(priority, created))


def _level(bucket: list[str | None], rate: float, now: float) -> float:
    """A bucket's level now (it leaks between requests; the stored level is as of its ``ts``)."""
    level, ts = bucket
    if not level:
        return 0.0
    return leak(float(level), float(ts or now), now, rate)


def _relay_backlog(groups: object) -> int:
    """Events the relay has not read yet (lag) or read but not yet turned into deliveries (pending)."""
    if not isinstance(groups, list):
        return 0
    for group in groups:
        if group.get("name") == keys.WEBHOOK_GROUP:
            return int(group.get("lag") or 0) + int(group.get("pending") or 0)
    return 0


def families(snap: Snapshot) -> list[Metric]:
    """The gauges of a snapshot (pure)."""

    def gauge(name: str, doc: str, labels: Iterable[str] = ()) -> GaugeMetricFamily:
        return GaugeMetricFamily(PREFIX + name, doc, labels=list(labels))

    depth = gauge("queue_depth", "Runs queued (retries waiting out a backoff included).", ["priority"])
    oldest = gauge("queue_oldest_age_seconds", "Age of the oldest queued run (0 when none).", ["priority"])
    for p in PRIORITIES:
        depth.add_metric([p.value], snap.depth.get(p.value, 0))
        created = snap.oldest.get(p.value)
        oldest.add_metric([p.value], 0.0 if created is None else max(0.0, snap.now - created))
    in_flight = gauge("runs_in_flight", "Runs handed to RQ or running.")
    in_flight.add_metric([], snap.in_flight)
    dead = gauge("dead_letter_runs", "Runs in the dead-letter set.")
    dead.add_metric([], snap.dead_letter)
    workers = gauge("workers", "Workers by state (paused: their ComfyUI does not answer).", ["state"])
    counts = dict.fromkeys(WORKER_STATES, 0)
    up = gauge("comfyui_up", "1 while the worker's ComfyUI answers, from its heartbeats.", ["worker"])
    for worker in snap.workers:
        if worker.state in counts:
            counts[worker.state] += 1
        up.add_metric([worker.name], 1.0 if worker.comfyui_healthy and worker.state != "offline" else 0.0)
    for state, count in counts.items():
        workers.add_metric([state], count)
    slots = gauge("ready_slots", "Runs the ready workers can hold at once (the sum of their pipeline depths).")
    slots.add_metric([], sum(w.slots for w in snap.workers if w.ready))
    admission = gauge("admission_bucket_level", "Level of the tenant's fullest API key bucket, in runs.", ["tenant"])
    for tenant, level in sorted(snap.admission.items()):
        admission.add_metric([tenant], level)
    dispatch = gauge("dispatch_bucket_level", "Level of the tenant's dispatch bucket, in runs.", ["tenant"])
    for tenant, level in sorted(snap.dispatch.items()):
        dispatch.add_metric([tenant], level)
    webhooks = gauge("webhook_backlog", "Webhook deliveries not done yet (relay lag, queued, scheduled retries).")
    webhooks.add_metric([], snap.webhook_backlog)
    unservable = gauge(
        "runs_waiting_for_capability",
        "Queued runs no ready worker's ComfyUI can run now (of at most 10,000 looked at).",
    )
    unservable.add_metric([], snap.waiting_for_capability)
    return [depth, oldest, in_flight, dead, workers, slots, up, admission, dispatch, webhooks, unservable]


class RedisCollector(Collector):
    """The shared-state gauges, read from Redis at each scrape; a Redis outage shows as ``redis_up 0``."""

    def __init__(
        self,
        redis: Redis,
        settings: Settings,
        *,
        key_owners: Mapping[str, str] | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.redis = redis
        self.settings = settings
        self.key_owners = dict(key_owners or {})
        self.clock = clock

    def describe(self) -> Iterable[Metric]:
        return []  # registration must not read Redis

    def collect(self) -> Iterable[Metric]:
        up = GaugeMetricFamily(PREFIX + "redis_up", "1 if the last scrape could read Redis.")
        try:
            now = self.clock() if self.clock else None
            snap = read_snapshot(self.redis, self.settings, key_owners=self.key_owners, now=now)
        except RedisError as exc:
            log.warning("metrics: cannot read Redis: %s", exc)
            up.add_metric([], 0.0)
            return [up]
        up.add_metric([], 1.0)
        return [*families(snap), up]


def redis_registry(collector: RedisCollector) -> CollectorRegistry:
    """A registry of its own for the Redis gauges (one per API app, so test apps never collide)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry
