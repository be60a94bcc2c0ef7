from __future__ import annotations

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from worker import runner


def test_the_end_of_a_run_outlasts_a_redis_restart(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner.time, "sleep", lambda _: None)
    calls: list[int] = []

    def write(value: int) -> int:
        calls.append(value)
        if len(calls) < 3:
            raise RedisConnectionError("restarting")
        return value * 2

    assert runner._through_redis_blips(write, 21) == 42
    assert len(calls) == 3


def test_it_gives_up_after_a_bounded_time(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = iter(range(0, 1000, 5))
    monkeypatch.setattr(runner.time, "monotonic", lambda: float(next(clock)))
    monkeypatch.setattr(runner.time, "sleep", lambda _: None)

    def write() -> None:
        raise RedisConnectionError("gone")

    with pytest.raises(RedisConnectionError):
        runner._through_redis_blips(write)
