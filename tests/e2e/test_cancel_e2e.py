"""``POST /v1/runs/{id}/cancel`` through real processes (API, scheduler, worker, fake ComfyUI, redis-server).

A queued run, behind one that holds the only worker, is canceled at once and never reaches ComfyUI; a run
executing on ComfyUI is interrupted there by its worker and ends ``canceled``; a run that already ended is a
409. Every accepted run ends exactly once (counted on the done channels); a second cancel of a canceled run
answers it again (200) and counts nothing twice. The fake's ``hang`` control holds a
prompt at its first node until it is interrupted, so "running" lasts exactly as long as the test needs.

Each test prints what it counted (run with -s to see it).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from redis import Redis

from dispatcher.runs import Run, RunStore
from tests.e2e.helpers import executing_on
from tests.faults.helpers import Completions
from tests.faults.test_faults import FAST
from tests.support_stack import LocalStack, submit

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]


# One run at a time per worker: a second run stays in the backlog while the first executes.
DEPTH_1 = FAST | {"COMFY_DISPATCH_PIPELINE_DEPTH": "1"}


def invert(color: int = 0) -> dict[str, object]:
    return {"params": {"width": 8, "height": 8, "color": color}}


def record(redis: Redis, run_id: str) -> Run:
    run = RunStore(redis).get(run_id)
    assert run is not None, run_id
    return run


def cancel(session: requests.Session, api: str, run_id: str) -> requests.Response:
    return session.post(f"{api}/v1/runs/{run_id}/cancel", timeout=20)


def test_cancel_of_a_queued_run_behind_a_busy_worker(redis_url: str, tmp_path: Path) -> None:
    """The only worker executes a run that hangs; a run behind it is canceled while queued: 200 canceled at once,
    it never starts, ComfyUI never sees it, and the run ahead is untouched. A cancel once that one succeeded: 409."""
    done = Completions(redis_url)
    redis = Redis.from_url(redis_url, decode_responses=True)
    with LocalStack(redis_url, tmp_path, workers=1, env=DEPTH_1) as stack:
        (fake,) = stack.fakes
        fake.control(hang=True)
        session = requests.Session()
        ahead = submit(session, stack.api, "invert", invert())
        executing_on(fake, redis, ahead)
        queued = [submit(session, stack.api, "invert", invert(i)) for i in range(3)]
        views = [session.get(f"{stack.api}/v1/runs/{run_id}", timeout=10).json() for run_id in queued]
        assert [v["status"] for v in views] == ["queued"] * 3, views
        assert [v["queue_position"] for v in views] == [0, 1, 2]

        victim = queued[1]
        reply = cancel(session, stack.api, victim)
        assert reply.status_code == 200, reply.text
        view = reply.json()
        assert view["status"] == "canceled" and view["finished_at"] and view["error"]["type"] == "canceled"
        assert session.get(f"{stack.api}/v1/runs/{queued[2]}", timeout=10).json()["queue_position"] == 1
        assert record(redis, ahead).status == "running"  # the run ahead goes on

        fake.control(hang=False)
        accepted = {ahead, *queued}
        done.wait_for(accepted, 30)
        done.settle(1.5)
        again = [cancel(session, stack.api, run_id) for run_id in (victim, ahead)]
        canceled = record(redis, victim)
        stats = fake.stats()
        prompts: dict[str, int] = stats["prompts"]  # type: ignore[assignment]
        ended, lost = set(done.ended), accepted - set(done.ended)
        duplicated = sum(count - 1 for count in done.ended.values())
        print(f"\ncancel of a queued run: accepted {len(accepted)}, ended {len(ended)}, lost {len(lost)}, "
              f"duplicated {duplicated}; statuses {sorted(done.status.values())}; the canceled run: attempts "
              f"{canceled.attempts}, started_at {canceled.started_at}; ComfyUI got {stats['posted']} prompts, "
              f"executed {stats['executed']}, interrupted {stats['interrupted']}; cancel again of the canceled "
              f"run and of the succeeded one: {[r.status_code for r in again]}")  # fmt: skip
        assert not lost and duplicated == 0, stack.logs()
        assert done.status == {
            ahead: "succeeded",
            queued[0]: "succeeded",
            victim: "canceled",
            queued[2]: "succeeded",
        }, stack.logs()
        assert canceled.attempts == 0 and canceled.started_at is None and canceled.worker == ""
        assert stats["posted"] == stats["executed"] == 3 and stats["interrupted"] == 0
        assert canceled.prompt_id not in prompts  # its prompt id is fixed at submission, and never posted
        assert {record(redis, r).prompt_id for r in accepted - {victim}} == set(prompts)
        finished = again[1]  # a run that succeeded; a second cancel of a canceled one: the last test
        assert finished.status_code == 409, finished.text
        assert finished.headers["content-type"].startswith("application/problem+json")
        assert "succeeded" in finished.json()["detail"]
    done.close()


def test_cancel_of_a_run_executing_on_comfyui(redis_url: str, tmp_path: Path) -> None:
    """The run hangs at its first node on ComfyUI; the cancel makes its worker interrupt ComfyUI, and the run
    ends canceled exactly once. The worker then runs the next run as usual."""
    done = Completions(redis_url)
    redis = Redis.from_url(redis_url, decode_responses=True)
    with LocalStack(redis_url, tmp_path, workers=1, env=FAST) as stack:
        (fake,) = stack.fakes
        fake.control(hang=True)
        session = requests.Session()
        victim = submit(session, stack.api, "invert", invert())
        prompt_id = executing_on(fake, redis, victim)
        assert session.get(f"{stack.api}/v1/runs/{victim}", timeout=10).json()["status"] == "running"

        started = time.monotonic()
        reply = cancel(session, stack.api, victim)
        answered_in = time.monotonic() - started
        assert reply.status_code in (200, 202), reply.text
        if reply.status_code == 202:  # the worker had not ended it within the API's wait: it will
            view = session.get(f"{stack.api}/v1/runs/{victim}", params={"wait": 20}, timeout=30).json()
        else:
            view = reply.json()
        assert view["status"] == "canceled", (view, stack.logs())
        assert view["error"]["type"] == "canceled"

        fake.control(hang=False)
        after = submit(session, stack.api, "invert", invert())  # the worker is free again, ComfyUI too
        accepted = {victim, after}
        done.wait_for(accepted, 30)
        done.settle(1.5)
        again = cancel(session, stack.api, after)  # it succeeded
        stats = fake.stats()
        prompts: dict[str, int] = stats["prompts"]  # type: ignore[assignment]
        history = requests.get(f"{fake.url}/history/{prompt_id}", timeout=5).json()
        ended, lost = set(done.ended), accepted - set(done.ended)
        duplicated = sum(count - 1 for count in done.ended.values())
        print(f"\ncancel of a running run: accepted {len(accepted)}, ended {len(ended)}, lost {len(lost)}, "
              f"duplicated {duplicated}; statuses {done.status}; cancel answered {reply.status_code} in "
              f"{answered_in:.2f}s; ComfyUI interrupted {stats['interrupted']}, executed {stats['executed']}; "
              f"cancel of the succeeded run: {again.status_code}")  # fmt: skip
        assert not lost and duplicated == 0, stack.logs()
        assert done.status == {victim: "canceled", after: "succeeded"}, stack.logs()
        assert stats["interrupted"] == 1 and stats["executed"] == 1, stats
        assert prompts.get(prompt_id, 0) <= 1  # never posted a second time
        if history:  # ComfyUI keeps the interrupted prompt's entry unless the worker cleared it
            assert history[prompt_id]["status"]["status_str"] == "error"
        assert record(redis, victim).attempts == 1
        assert again.status_code == 409 and "succeeded" in again.json()["detail"], again.text
    done.close()


def canceled_total(api: str) -> float:
    """The API process's ``runs_completed_total{status="canceled"}`` (a queued run canceled is counted there)."""
    text = requests.get(f"{api}/metrics", timeout=10).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "comfy_dispatch_runs_completed_total" and sample.labels.get("status") == "canceled"
    )


def test_a_second_cancel_of_a_canceled_run_changes_nothing_and_is_counted_once(redis_url: str, tmp_path: Path) -> None:
    """A cancel is idempotent: a client that sends it again (its first answer lost) gets the canceled run,
    and the run's end is not counted again."""
    with LocalStack(redis_url, tmp_path, workers=1, start_workers=False) as stack:
        session = requests.Session()
        run_id = submit(session, stack.api, "invert", invert())
        first = cancel(session, stack.api, run_id)
        assert first.status_code == 200 and first.json()["status"] == "canceled", first.text
        repeats = [cancel(session, stack.api, run_id) for _ in range(2)]
        counted = canceled_total(stack.api)
        print(f"\nrepeat cancels of a canceled run: {[r.status_code for r in repeats]}, its end counted {counted:g}x")
        assert [r.status_code for r in repeats] == [200, 200], [r.text for r in repeats]
        assert all(r.json()["status"] == "canceled" for r in repeats)
        assert counted == 1
