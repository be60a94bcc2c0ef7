"""Metrics of real processes after real runs: the API, the scheduler, the webhooks process and two workers,
scraped over HTTP, counted right, and each scrape passing ``promtool check metrics``."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from redis import Redis

from dispatcher.waiting import parse_done
from tests.support_stack import LocalStack, submit

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

RUNS = 20
# Room for exactly the good runs and one bad one: the next submission is over the rate (a 429).
LIMITS = {"COMFY_DISPATCH_SUBMIT_RATE": "0.01", "COMFY_DISPATCH_SUBMIT_BURST": str(RUNS + 1)}


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        message = "promtool not found: install Debian's prometheus package (make test does)"
        if os.geteuid() != 0:
            pytest.skip(message)
        pytest.fail(message)
    return path


def get_text(url: str) -> str:
    reply = requests.get(url, timeout=10)
    assert reply.status_code == 200, reply.text
    return reply.text


def total(text: str, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )


def eventually(check: Callable[[], bool], timeout: float = 15.0) -> bool:
    """Whether ``check`` holds within ``timeout`` (a count may land a moment after the event it counts)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def test_counts_of_real_runs_on_every_process(redis_url: str, tmp_path: Path) -> None:
    tool = promtool()
    with LocalStack(redis_url, tmp_path, workers=2, env=LIMITS) as stack:
        worker_urls = [f"http://127.0.0.1:{p}/metrics" for p in stack.worker_metrics_ports]
        scheduler_url = f"http://127.0.0.1:{stack.scheduler_metrics_port}/metrics"
        webhooks_url = f"http://127.0.0.1:{stack.webhooks_metrics_port}/metrics"
        assert eventually(lambda: all(_answers(u) for u in [*worker_urls, scheduler_url, webhooks_url])), stack.logs()

        events = Redis.from_url(redis_url, decode_responses=True).pubsub(ignore_subscribe_messages=True)
        events.psubscribe("cd:run:*:done")  # before submitting: no completion can slip past
        session = requests.Session()
        runs = {submit(session, stack.api, "invert", {"params": {"width": 8, "height": 8}}) for _ in range(RUNS)}
        bad = session.post(f"{stack.api}/v1/workflows/invert/runs", json={"params": {"width": "wide"}}, timeout=10)
        assert bad.status_code == 422
        over = session.post(f"{stack.api}/v1/workflows/invert/runs", json={}, timeout=10)
        assert over.status_code == 429

        ended: dict[str, str] = {}
        deadline = time.monotonic() + 60
        while len(ended) < RUNS and time.monotonic() < deadline:
            message = events.get_message(timeout=5)
            if message:
                ended[message["channel"].split(":")[2]] = parse_done(message["data"])[0]
        assert set(ended) == runs and set(ended.values()) == {"succeeded"}, stack.logs()

        def workers_total(name: str, **labels: str) -> float:
            return sum(total(get_text(url), name, **labels) for url in worker_urls)

        succeeded = {"workflow": "invert", "status": "succeeded"}
        assert eventually(lambda: workers_total("comfy_dispatch_runs_completed_total", **succeeded) == RUNS)
        assert workers_total("comfy_dispatch_run_duration_seconds_count", **succeeded) == RUNS
        assert workers_total("comfy_dispatch_queue_wait_seconds_count", priority="normal") == RUNS
        assert workers_total("comfy_dispatch_comfyui_execution_seconds_count", workflow="invert") == RUNS
        assert workers_total("comfy_dispatch_output_upload_seconds_count") == RUNS
        assert workers_total("comfy_dispatch_output_bytes_total") > 0
        assert workers_total("comfy_dispatch_run_retries_total") == 0
        for url in worker_urls:
            own = get_text(url)
            assert total(own, "comfy_dispatch_worker_comfyui_up") == 1
            assert total(own, "comfy_dispatch_worker_busy") == 0
            assert total(own, "comfy_dispatch_worker_runs_held") == 0

        # The API hands a run out itself when a worker has room; the scheduler the rest: each counts what it did.
        dispatched = [total(get_text(u), "comfy_dispatch_runs_dispatched_total", priority="normal") for u in (
            scheduler_url, stack.api + "/metrics")]  # fmt: skip
        assert sum(dispatched) == RUNS
        assert workers_total("comfy_dispatch_gpu_seconds_total", tenant="default") > 0
        assert total(get_text(stack.api + "/metrics"), "comfy_dispatch_ready_slots") == 2 * 2  # depth 2 each

        # The API's own counters, and the gauges it reads from Redis: all quiet once the workers beat again.
        def api_settled() -> bool:
            api = get_text(stack.api + "/metrics")
            return total(api, "comfy_dispatch_workers", state="idle") == 2

        assert eventually(api_settled), get_text(stack.api + "/metrics")
        api = get_text(stack.api + "/metrics")
        assert total(api, "comfy_dispatch_runs_submitted_total", workflow="invert") == RUNS
        assert total(api, "comfy_dispatch_runs_rejected_total", reason="validation") >= 1
        assert total(api, "comfy_dispatch_runs_rejected_total", reason="rate_limit") >= 1
        assert total(api, "comfy_dispatch_queue_depth") == 0
        assert total(api, "comfy_dispatch_runs_in_flight") == 0
        assert total(api, "comfy_dispatch_workers", state="busy") == 0
        for worker in (f"w{i}-{fake.port}" for i, fake in enumerate(stack.fakes)):
            assert total(api, "comfy_dispatch_comfyui_up", worker=worker) == 1
        assert total(api, "comfy_dispatch_redis_up") == 1

        for url in [stack.api + "/metrics", scheduler_url, webhooks_url, *worker_urls]:
            checked = subprocess.run([tool, "check", "metrics"], input=get_text(url), capture_output=True, text=True)
            assert checked.returncode == 0 and not (checked.stdout + checked.stderr).strip(), (url, checked)


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.ConnectionError:
        return False
