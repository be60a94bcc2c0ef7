"""GPU-seconds per tenant through real processes: 20 runs of a 200 ms job, then GET /v1/usage."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from tests.support_stack import LocalStack, submit

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

RUNS = 20


def test_usage_counts_runs_and_gpu_seconds_of_a_tenant(redis_url: str, tmp_path: Path) -> None:
    with LocalStack(redis_url, tmp_path, workers=1, exec_seconds=0.2) as stack:
        session = requests.Session()
        runs = [submit(session, stack.api, "invert", {"params": {"width": 8, "height": 8}}) for _ in range(RUNS)]
        views = [session.get(f"{stack.api}/v1/runs/{r}", params={"wait": 60}, timeout=70).json() for r in runs]
        assert {v["status"] for v in views} == {"succeeded"}, stack.logs()
        assert all(v["gpu_seconds"] == pytest.approx(0.2, abs=0.02) for v in views), [v["gpu_seconds"] for v in views]
        usage = session.get(f"{stack.api}/v1/usage", timeout=10).json()
        assert usage["tenant"] == "default"
        assert usage["total"]["runs"] == RUNS
        assert usage["total"]["gpu_seconds"] == pytest.approx(4.0, abs=0.4)
        (today,) = [d for d in usage["days"] if d["runs"]]
        assert today == {"date": usage["days"][-1]["date"], **usage["total"]}
