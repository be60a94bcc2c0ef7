"""Counting completions for fault tests: every accepted run must end exactly once."""

from __future__ import annotations

import time
from collections import Counter

from redis import Redis

from dispatcher.waiting import parse_done


class Completions:
    """Subscribes to every run's done channel before anything is submitted, and counts."""

    def __init__(self, redis_url: str) -> None:
        self.redis = Redis.from_url(redis_url, decode_responses=True)
        self.pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        self.pubsub.psubscribe("cd:run:*:done")
        self.ended: Counter[str] = Counter()
        self.status: dict[str, str] = {}
        self.order: list[str] = []

    def wait_for(self, run_ids: set[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not run_ids <= set(self.ended) and time.monotonic() < deadline:
            self.poll(1.0)

    def poll(self, timeout: float) -> None:
        message = self.pubsub.get_message(timeout=timeout)
        if message is not None and message["type"] == "pmessage":
            run_id = message["channel"].split(":")[2]
            self.ended[run_id] += 1
            self.status[run_id] = parse_done(message["data"])[0]
            self.order.append(run_id)

    def settle(self, seconds: float) -> None:
        """Keep listening a while: a duplicate completion would show up here."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.poll(max(0.0, deadline - time.monotonic()))

    def close(self) -> None:
        self.pubsub.close()
        self.redis.close()
