"""Metrics: the gauges read from Redis at scrape time (fakeredis), retry reasons, the API's /metrics."""

from __future__ import annotations

import re

import pytest
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from redis import Redis

from api.app import create_app
from dispatcher import keys, metrics
from dispatcher.apikeys import ApiKeyStore
from dispatcher.connections import Connections
from dispatcher.errors import (
    ComfyUIError,
    ComfyUIExecutionError,
    ComfyUIInterrupted,
    ComfyUIUnavailable,
    InputImageUnavailable,
    RunTimeout,
)
from dispatcher.runs import new_run_id
from dispatcher.settings import Settings, load_settings
from dispatcher.storage import MemoryStore
from dispatcher.tenants import TenantStore
from tests.api.helpers import TestClient

NOW = 1_700_000_000.0
RUN_ID_RE = re.compile(r"^[0-9a-f]{32}$")

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(text: str) -> Samples:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def queue_run(redis: Redis, tenant: str, priority: str, created: float) -> str:
    run_id = new_run_id()
    redis.hset(keys.run(run_id), mapping={"id": run_id, "priority": priority, "created_at": repr(created)})
    redis.zadd(keys.backlog(tenant, priority), {run_id: created})
    if tenant not in redis.lrange(keys.rotation(priority), 0, -1):  # type: ignore[operator]
        redis.rpush(keys.rotation(priority), tenant)
    return run_id


def add_worker(redis: Redis, name: str, state: str | None, healthy: bool = True, slots: int = 2) -> None:
    redis.zadd(keys.WORKERS, {name: NOW - 1})
    if state is not None:  # None: its heartbeat hash expired, it is offline
        fields = {"name": name, "state": state, "comfyui_healthy": "1" if healthy else "0", "last_seen": repr(NOW - 1)}
        redis.hset(keys.worker(name), mapping=fields | {"slots": str(slots)})


@pytest.fixture
def settings() -> Settings:
    return load_settings({}, auth="enabled")


@pytest.fixture
def prepared(fake_conns: Connections, settings: Settings) -> Redis:
    """Runs queued at high (two, acme) and normal (one, default), a retry waiting at low, two in flight, one dead;
    five workers, one per state (pipelines of 2 but gpu1's 3); acme's keys and buckets; webhook deliveries at
    every stage."""
    redis = fake_conns.text
    TenantStore(redis, settings).set("acme", submit_rate=1, dispatch_rate=2)
    queue_run(redis, "acme", "high", NOW - 30)
    queue_run(redis, "acme", "high", NOW - 10)
    queue_run(redis, "default", "normal", NOW - 5)
    retry = new_run_id()
    redis.hset(keys.run(retry), mapping={"id": retry, "priority": "low", "created_at": repr(NOW - 100)})
    redis.zadd(keys.DELAYED, {retry: NOW + 3})
    redis.zadd(keys.INFLIGHT, {new_run_id(): NOW - 2, new_run_id(): NOW - 1})
    redis.zadd(keys.DEAD_LETTER, {new_run_id(): NOW - 50})
    add_worker(redis, "gpu0", "idle")
    add_worker(redis, "gpu1", "busy", slots=3)
    add_worker(redis, "gpu2", "paused", healthy=False)
    add_worker(redis, "gpu3", None)
    add_worker(redis, "gpu4", "draining")
    store = ApiKeyStore(redis)
    first, _ = store.create("acme")
    second, _ = store.create("acme")
    # Levels as of their last request: 5 two seconds ago leaks to 3 at 1/s; 1 a second ago to 0.
    redis.hset(keys.bucket("submit", first.key_id), mapping={"level": "5", "ts": repr(NOW - 2)})
    redis.hset(keys.bucket("submit", second.key_id), mapping={"level": "1", "ts": repr(NOW - 1)})
    redis.hset(keys.bucket("dispatch", "acme"), mapping={"level": "2", "ts": repr(NOW - 0.5)})
    redis.xgroup_create(keys.WEBHOOK_EVENTS, keys.WEBHOOK_GROUP, id="0", mkstream=True)
    for i in range(3):
        redis.xadd(keys.WEBHOOK_EVENTS, {"run": f"r{i}", "event": "1-0", "type": "done"})
    redis.xreadgroup(keys.WEBHOOK_GROUP, "relay", {keys.WEBHOOK_EVENTS: ">"}, count=1)  # 1 pending, 2 unread
    redis.rpush(f"rq:queue:{settings.webhook_queue}", "job-a", "job-b")
    redis.zadd(f"rq:scheduled:{settings.webhook_queue}", {"job-c": NOW + 10})
    return redis


def collect(redis: Redis, settings: Settings) -> Samples:
    registry = metrics.redis_registry(metrics.RedisCollector(redis, settings, clock=lambda: NOW))
    return scrape(generate_latest(registry).decode())


def test_queue_gauges_per_priority(prepared: Redis, settings: Settings) -> None:
    samples = collect(prepared, settings)
    depth = {p: value(samples, "comfy_dispatch_queue_depth", priority=p) for p in ("high", "normal", "low")}
    assert depth == {"high": 2, "normal": 1, "low": 1}
    oldest = {p: value(samples, "comfy_dispatch_queue_oldest_age_seconds", priority=p) for p in depth}
    assert oldest == {"high": 30, "normal": 5, "low": 100}
    assert value(samples, "comfy_dispatch_runs_in_flight") == 2
    assert value(samples, "comfy_dispatch_dead_letter_runs") == 1
    assert value(samples, "comfy_dispatch_redis_up") == 1


def test_an_empty_queue_has_depth_and_age_zero(fake_conns: Connections, settings: Settings) -> None:
    samples = collect(fake_conns.text, settings)
    for priority in ("high", "normal", "low"):
        assert value(samples, "comfy_dispatch_queue_depth", priority=priority) == 0
        assert value(samples, "comfy_dispatch_queue_oldest_age_seconds", priority=priority) == 0
    assert value(samples, "comfy_dispatch_webhook_backlog") == 0
    assert {value(samples, "comfy_dispatch_workers", state=s) for s in metrics.WORKER_STATES} == {0}


def test_workers_by_state_and_comfyui_up(prepared: Redis, settings: Settings) -> None:
    samples = collect(prepared, settings)
    assert {s: value(samples, "comfy_dispatch_workers", state=s) for s in metrics.WORKER_STATES} == {
        "idle": 1,
        "busy": 1,
        "paused": 1,
        "draining": 1,
        "offline": 1,
    }
    up = {w: value(samples, "comfy_dispatch_comfyui_up", worker=w) for w in ("gpu0", "gpu1", "gpu2", "gpu3")}
    assert up == {"gpu0": 1, "gpu1": 1, "gpu2": 0, "gpu3": 0}
    assert value(samples, "comfy_dispatch_ready_slots") == 2 + 3  # idle and busy workers: paused, draining not


def test_bucket_levels_leak_since_their_last_update(prepared: Redis, settings: Settings) -> None:
    samples = collect(prepared, settings)
    assert value(samples, "comfy_dispatch_admission_bucket_level", tenant="acme") == pytest.approx(3.0)
    assert value(samples, "comfy_dispatch_admission_bucket_level", tenant="default") == 0
    assert value(samples, "comfy_dispatch_dispatch_bucket_level", tenant="acme") == pytest.approx(1.0)


def test_the_auth_disabled_bucket_counts_for_the_default_tenant(fake_conns: Connections, settings: Settings) -> None:
    redis = fake_conns.text
    redis.hset(keys.bucket("submit", "anonymous"), mapping={"level": "50", "ts": repr(NOW)})
    collector = metrics.RedisCollector(redis, settings, key_owners={"anonymous": "default"}, clock=lambda: NOW)
    samples = scrape(generate_latest(metrics.redis_registry(collector)).decode())
    assert value(samples, "comfy_dispatch_admission_bucket_level", tenant="default") == 50


def test_webhook_backlog_counts_unread_pending_queued_and_scheduled(prepared: Redis, settings: Settings) -> None:
    assert value(collect(prepared, settings), "comfy_dispatch_webhook_backlog") == 2 + 1 + 2 + 1


def test_no_label_is_a_run_id(prepared: Redis, settings: Settings) -> None:
    for _, labels in collect(prepared, settings):
        for _, label in labels:
            assert not RUN_ID_RE.match(label), label


def test_redis_down_is_redis_up_zero_not_a_failed_scrape(settings: Settings) -> None:
    gone = Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2, decode_responses=True)
    samples = collect(gone, settings)
    assert samples == {("comfy_dispatch_redis_up", ()): 0.0}
    gone.close()


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (ComfyUIUnavailable("down"), "comfyui_unavailable"),
        (ComfyUIExecutionError({"exception_type": "torch.OutOfMemoryError"}), "out_of_memory"),
        (ComfyUIExecutionError({"exception_type": "OSError"}), "other"),
        (ComfyUIInterrupted({}, requested=False), "interrupted"),
        (InputImageUnavailable("image", "503"), "input_unavailable"),
        (RunTimeout("slow"), "other"),
    ],
)
def test_retry_reasons(exc: ComfyUIError, reason: str) -> None:
    assert metrics.retry_reason(exc) == reason
    assert reason in metrics.RETRY_REASONS


def counted(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_the_api_serves_metrics_openly_and_counts_submissions_and_rejections(fake_conns: Connections) -> None:
    app = create_app(load_settings({}, auth="disabled"), conns=fake_conns, store=MemoryStore())
    submitted = counted("comfy_dispatch_runs_submitted_total", workflow="invert", priority="normal")
    validation = counted("comfy_dispatch_runs_rejected_total", reason="validation")
    not_found = counted("comfy_dispatch_runs_rejected_total", reason="not_found")
    canceled = counted("comfy_dispatch_runs_completed_total", workflow="invert", status="canceled")
    with TestClient(app) as client:
        run = client.post("/v1/workflows/invert/runs", json={"params": {"width": 8, "height": 8}})
        assert run.status_code == 202
        assert client.post("/v1/workflows/invert/runs", json={"params": {"width": "wide"}}).status_code == 422
        assert client.get("/v1/runs/" + "0" * 32).status_code == 404  # a read, not a refused submission
        assert client.post(f"/v1/runs/{run.json()['id']}/cancel").status_code == 200
        reply = client.get("/metrics")
    assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/plain")
    samples = scrape(reply.text)
    assert value(samples, "comfy_dispatch_queue_depth", priority="normal") == 0
    assert counted("comfy_dispatch_runs_submitted_total", workflow="invert", priority="normal") == submitted + 1
    assert counted("comfy_dispatch_runs_rejected_total", reason="validation") == validation + 1
    assert counted("comfy_dispatch_runs_rejected_total", reason="not_found") == not_found
    assert counted("comfy_dispatch_runs_completed_total", workflow="invert", status="canceled") == canceled + 1
