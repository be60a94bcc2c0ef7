"""What clients get through real processes: live events, synchronous waits, idempotent re-sends, cached results.

Each test runs a whole stack (fake ComfyUI, API, scheduler, worker) and counts the executions in
the fake: a re-sent request, a client that left mid-wait, or a cached result must not add one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import requests

from tests.events_helpers import parse_sse
from tests.support_stack import LocalStack

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


def body(color: int, **extra: Any) -> dict[str, Any]:
    return {"params": {"width": 8, "height": 8, "color": color}, **extra}


def executed(stack: LocalStack) -> int:
    return sum(int(fake.stats()["executed"]) for fake in stack.fakes)  # type: ignore[call-overload]


def test_stream_true_follows_a_real_run_to_its_end(redis_url: str, tmp_path: Path) -> None:
    # Long enough for progress events: a run writes its progress 0.25 s after it started, and then at most as often.
    with LocalStack(redis_url, tmp_path, workers=1, exec_seconds=0.6) as stack:
        url = f"{stack.api}/v1/workflows/invert/runs"
        with requests.post(url, json=body(0x102030, stream=True), stream=True, timeout=30) as response:
            assert response.status_code == 200, response.text
            got = list(parse_sse(response.iter_lines(decode_unicode=True)))
        kinds = [e.event for e in got if not e.comments]
        assert kinds[:2] == ["queued", "started"], (kinds, stack.logs())
        assert kinds[-2:] == ["output", "done"], (kinds, stack.logs())
        assert set(kinds[2:-2]) == {"progress"}
        (output,) = [e.json() for e in got if e.event == "output"]
        image = requests.get(output["url"], timeout=10)
        assert image.status_code == 200 and image.headers["content-type"] == "image/png"
        assert executed(stack) == 1


def test_a_batch_sent_twice_with_its_idempotency_keys_runs_once(redis_url: str, tmp_path: Path) -> None:
    with LocalStack(redis_url, tmp_path, workers=2) as stack:
        session = requests.Session()
        url = f"{stack.api}/v1/workflows/invert/runs"

        def send_file() -> list[requests.Response]:
            return [
                session.post(url, json=body(i), headers={"Idempotency-Key": f"file-1/line-{i}"}, timeout=10)
                for i in range(12)
            ]

        first = send_file()
        assert all(r.status_code == 202 for r in first), [r.text for r in first]
        for reply in first:
            run = session.get(f"{stack.api}/v1/runs/{reply.json()['id']}", params={"wait": 60}, timeout=70).json()
            assert run["status"] == "succeeded", f"{run}\n{stack.logs()}"  # a str: shown whole
        again = send_file()  # the producer crashed and sends the whole file again
        assert [r.json()["id"] for r in again] == [r.json()["id"] for r in first]
        assert all(r.status_code == 200 and r.headers["Idempotent-Replayed"] == "true" for r in again)
        assert executed(stack) == 12


def test_a_client_that_leaves_mid_wait_loses_nothing_and_runs_nothing_twice(redis_url: str, tmp_path: Path) -> None:
    with LocalStack(redis_url, tmp_path, workers=1, exec_seconds=1.5) as stack:
        url = f"{stack.api}/v1/workflows/invert/runs"
        headers = {"Idempotency-Key": "order-42"}
        with pytest.raises(requests.ReadTimeout):
            # The connection drops 0.5 s into a 60 s wait: the run is queued or executing by then.
            requests.post(url, params={"wait": 60}, json=body(7), headers=headers, timeout=(5, 0.5))
        again = requests.post(url, params={"wait": 60}, json=body(7), headers=headers, timeout=70)
        assert again.status_code == 200, (again.text, stack.logs())
        assert again.headers["Idempotent-Replayed"] == "true"
        run = again.json()
        assert run["status"] == "succeeded" and run["attempts"] == 1
        assert executed(stack) == 1


def test_a_cached_result_touches_no_comfyui(redis_url: str, tmp_path: Path) -> None:
    with LocalStack(redis_url, tmp_path, workers=1) as stack:
        url = f"{stack.api}/v1/workflows/invert/runs"
        first = requests.post(url, params={"wait": 60}, json=body(9, cache=True), timeout=70).json()
        assert first["status"] == "succeeded", (first, stack.logs())
        assert executed(stack) == 1
        hit = requests.post(url, params={"wait": 60}, json=body(9, cache=True), timeout=70)
        assert hit.status_code == 200
        view = hit.json()
        assert view["cached"] is True and view["cached_from"] == first["id"]
        assert executed(stack) == 1  # no GPU touched
        data = [requests.get(run["outputs"][0]["url"], timeout=10).content for run in (first, view)]
        assert data[0] == data[1]
        with requests.get(f"{stack.api}/v1/runs/{view['id']}/events", stream=True, timeout=10) as response:
            kinds = [e.event for e in parse_sse(response.iter_lines(decode_unicode=True))]
        assert kinds == ["queued", "output", "done"]
