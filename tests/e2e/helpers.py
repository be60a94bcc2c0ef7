"""Waiting on what a stack of real processes shows only when asked: a run's record, ComfyUI's queue."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import requests
from redis import Redis

from dispatcher.runs import RunStore
from tests.support import FakeComfy


def wait_until(check: Callable[[], Any], what: str, timeout: float = 20.0) -> Any:
    """Poll ``check()`` until it is truthy, and return that; TimeoutError naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.05)
    raise TimeoutError(what)


def executing_on(fake: FakeComfy, redis: Redis, run_id: str, timeout: float = 20.0) -> str:
    """Wait until ``run_id`` is running and its prompt is the one ``fake`` executes; its prompt id."""
    store = RunStore(redis)

    def prompt_running() -> str:
        run = store.get(run_id)
        if run is None or run.status != "running" or not run.prompt_id:
            return ""
        running = requests.get(f"{fake.url}/queue", timeout=5).json()["queue_running"]
        return run.prompt_id if run.prompt_id in {item[1] for item in running} else ""

    prompt_id: str = wait_until(prompt_running, f"run {run_id} never executed on {fake.url}", timeout)
    return prompt_id
