"""Dispatch on a real redis-server: schedulers racing never take a run twice; the dead-letter CLI."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

import pytest
from redis import Redis
from typer.testing import CliRunner

from dispatcher import keys
from dispatcher.cli import app
from dispatcher.connections import Connections
from dispatcher.errors import ParameterError
from dispatcher.lease import RequeueResult
from tests.unit.dispatch_helpers import Bench

pytestmark = pytest.mark.redis


@pytest.fixture
def bench(redis_url: str) -> Bench:
    return Bench.build(Connections.from_url(redis_url))


def test_racing_schedulers_take_each_run_once(bench: Bench, redis_url: str) -> None:
    submitted = {bench.submit(tenant=f"t{i % 7}", priority=("high", "normal", "low")[i % 3]).id for i in range(600)}
    taken: Counter[str] = Counter()
    lock = threading.Lock()

    def scheduler() -> None:
        other = Bench.build(Connections.from_url(redis_url))
        while True:
            runs = other.dispatcher.take(10**6).runs
            if not runs:
                return
            with lock:
                taken.update(d.run_id for d in runs)

    threads = [threading.Thread(target=scheduler) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert set(taken) == submitted and set(taken.values()) == {1}


def test_a_run_takes_its_own_timeout(bench: Bench) -> None:
    body: dict[str, Any] = {"params": {"width": 8, "height": 8}, "timeout_seconds": 5}
    assert bench.submitter.submit("invert", body).timeout == 5.0
    with pytest.raises(ParameterError) as info:
        bench.submitter.submit("invert", body | {"timeout_seconds": -1})
    assert info.value.param == "timeout_seconds"


def test_dead_letter_cli_lists_and_requeues(bench: Bench, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMFY_DISPATCH_REDIS_URL", redis_url)
    run = bench.submit()
    bench.take(1)
    run = bench.run(run.id)
    lease = bench.leases.claim(run.id, "w", run.dispatches).lease
    bench.conns.text.hset(keys.run(run.id), "max_attempts", "1")
    assert bench.leases.requeue(lease, run, error={"message": "CUDA out of memory"}, delay=0) is RequeueResult.DEAD

    runner = CliRunner()
    listed = runner.invoke(app, ["dead-letter", "list"])
    assert listed.exit_code == 0 and run.id in listed.stdout and "CUDA out of memory" in listed.stdout
    assert runner.invoke(app, ["dead-letter", "requeue"]).exit_code == 2  # names nothing
    assert runner.invoke(app, ["dead-letter", "requeue", "nope"]).exit_code == 2
    requeued = runner.invoke(app, ["dead-letter", "requeue", "--all"])
    assert requeued.exit_code == 0, requeued.output
    assert bench.run(run.id).status == "queued"
    assert Redis.from_url(redis_url).zcard(keys.DEAD_LETTER) == 0
