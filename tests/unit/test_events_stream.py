"""Every state change of a run appends to its event stream, in the script that makes the change."""

from __future__ import annotations

import json

import pytest

from dispatcher import keys
from dispatcher.cancel import Canceller
from dispatcher.connections import Connections
from dispatcher.runs import Output, RunStatus
from tests.unit.dispatch_helpers import Bench


@pytest.fixture
def bench(fake_conns: Connections) -> Bench:
    return Bench.build(fake_conns)


def events(bench: Bench, run_id: str) -> list[tuple[str, dict[str, object]]]:
    entries = bench.conns.text.xrange(keys.run_events(run_id))
    return [(fields["type"], json.loads(fields["data"])) for _, fields in entries]


def test_the_life_of_a_successful_run(bench: Bench) -> None:
    run = bench.submit()
    bench.take(1)
    run = bench.run(run.id)
    lease = bench.leases.claim(run.id, "w1", run.dispatches, comfyui_url="http://c").lease
    assert lease is not None
    bench.leases.update(lease, progress="0.5", node="2")
    bench.leases.update(lease, node="3")  # no progress field: no event
    out = Output("3", "a.png", "image/png", 10, f"{run.id}/1/a.png")
    bench.leases.complete(lease, run, RunStatus.SUCCEEDED, outputs=[out])
    assert [t for t, _ in events(bench, run.id)] == ["queued", "started", "progress", "output", "done"]
    _, started = events(bench, run.id)[1]
    assert started == {"attempt": 1, "worker": "w1", "comfyui_url": "http://c"}
    assert events(bench, run.id)[2][1] == {"progress": 0.5, "node": "2"}
    assert events(bench, run.id)[3][1]["filename"] == "a.png"
    assert bench.conns.text.ttl(keys.run_events(run.id)) > 0


def test_a_retry_then_a_failure(bench: Bench) -> None:
    run = bench.submit()
    bench.take(1)
    run = bench.run(run.id)
    lease = bench.leases.claim(run.id, "w1", run.dispatches).lease
    bench.leases.requeue(lease, run, error={"type": "oom"}, delay=0)
    import time

    time.sleep(0.01)
    bench.take(1)
    run = bench.run(run.id)
    lease = bench.leases.claim(run.id, "w2", run.dispatches).lease
    assert lease is not None
    bench.leases.complete(lease, run, RunStatus.FAILED, error={"type": "execution_error"})
    kinds = events(bench, run.id)
    assert [t for t, _ in kinds] == ["queued", "started", "retrying", "started", "error"]
    assert kinds[2][1]["attempt"] == 1 and kinds[2][1]["error"] == {"type": "oom"}
    assert kinds[4][1] == {"status": "failed", "error": {"type": "execution_error"}}


def test_cancel_of_a_queued_run_ends_its_stream(bench: Bench) -> None:
    run = bench.submit()
    Canceller(bench.conns.text, run_ttl_seconds=60).cancel(run)
    assert [t for t, _ in events(bench, run.id)] == ["queued", "canceled"]


def test_only_runs_with_callbacks_feed_the_webhook_sender(bench: Bench) -> None:
    plain = bench.submit()
    hooked = bench.submitter.submit(
        "invert", {"params": {}, "callback_urls": {"on_result_url": "https://example.com/hook"}}
    )
    assert hooked.callbacks == {"on_result_url": "https://example.com/hook"}
    feed = bench.conns.text.xrange(keys.WEBHOOK_EVENTS)
    assert [(f["run"], f["type"]) for _, f in feed] == [(hooked.id, "queued")]
    assert plain.id not in {f["run"] for _, f in feed}
