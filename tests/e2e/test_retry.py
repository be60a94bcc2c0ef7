"""A transient failure in a real worker process is retried through RQ's scheduler, and runs once more only."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from tests.support_stack import LocalStack, submit

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


def test_out_of_memory_is_retried_and_succeeds(redis_url: str, tmp_path: Path) -> None:
    with LocalStack(redis_url, tmp_path, workers=1) as stack:
        (fake,) = stack.fakes
        # the first prompt's ImageInvert raises torch's OOM, the retry goes through
        fake.control(
            fail_node_type="ImageInvert", fail_times=1, exception_type="torch.OutOfMemoryError", exception_message="OOM"
        )
        session = requests.Session()
        run_id = submit(session, stack.api, "invert", {"params": {"width": 8, "height": 8}})
        run = session.get(f"{stack.api}/v1/runs/{run_id}", params={"wait": 60}, timeout=70).json()
        assert run["status"] == "succeeded", f"{run}\n{stack.logs()}"  # a str: shown whole
        assert run["attempts"] == 2
        stats = fake.stats()
        assert stats["failed"] == 1 and stats["executed"] == 1

        workers = session.get(f"{stack.api}/v1/workers", timeout=5).json()["workers"]
        assert [(w["comfyui_url"], w["health"]) for w in workers] == [(fake.url, "healthy")]
