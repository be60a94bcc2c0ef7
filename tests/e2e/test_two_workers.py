"""300 runs through the real API, Redis and 2 workers, each bound to its own fake ComfyUI process."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import requests
from redis import Redis

from dispatcher.fake_comfyui.values import inverted_rgb8
from dispatcher.runs import RunStore
from dispatcher.waiting import parse_done
from tests.support_stack import LocalStack, first_pixel, submit

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

RUNS = 300


def test_300_runs_through_two_workers_each_execute_once_with_their_own_output(redis_url: str, tmp_path: Path) -> None:
    with LocalStack(redis_url, tmp_path, workers=2) as stack:
        redis = Redis.from_url(redis_url, decode_responses=True)
        events = redis.pubsub(ignore_subscribe_messages=True)
        events.psubscribe("cd:run:*:done")  # before submitting: no completion can slip past
        session = requests.Session()
        colours = {}
        for i in range(RUNS):
            colour = (i * 2654435761) & 0xFFFFFF  # a different fill colour per run
            run_id = submit(session, stack.api, "invert", {"params": {"width": 16, "height": 16, "color": colour}})
            colours[run_id] = colour

        ended: dict[str, str] = {}
        deadline = time.monotonic() + 180
        while len(ended) < RUNS and time.monotonic() < deadline:
            message = events.get_message(timeout=5)
            if message:
                ended[message["channel"].split(":")[2]] = parse_done(message["data"])[0]
        assert len(ended) == RUNS, stack.logs()
        assert set(ended) == set(colours)
        assert set(ended.values()) == {"succeeded"}, stack.logs()

        store = RunStore(redis)
        prompt_ids = set()
        for run_id, colour in colours.items():
            run = store.get(run_id)
            assert run is not None and run.attempts == 1
            prompt_ids.add(run.prompt_id)
            view = session.get(f"{stack.api}/v1/runs/{run_id}", timeout=10).json()
            (output,) = view["outputs"]
            assert run_id in output["filename"]
            data = session.get(output["url"], timeout=10).content
            assert first_pixel(data) == inverted_rgb8(colour), f"run {run_id} got someone else's image"

        # Count executions in the fakes: every run's prompt ran exactly once, on exactly one of them.
        executed: dict[str, int] = {}
        for fake in stack.fakes:
            stats = fake.stats()
            for prompt_id, count in stats["prompts"].items():  # type: ignore[union-attr]
                executed[prompt_id] = executed.get(prompt_id, 0) + count
            assert stats["executed"] > 0, "both workers take work"
        assert executed == {p: 1 for p in prompt_ids}
        assert sum(f.stats()["executed"] for f in stack.fakes) == RUNS  # type: ignore[misc]
        # Each run's claim took its RQ job off RQ's lists: nothing popped is left behind, no job hash either.
        popped = [key for key in redis.scan_iter("rq:queue:*:intermediate") if redis.llen(key)]
        assert popped == [] and list(redis.scan_iter("rq:job:*")) == []
