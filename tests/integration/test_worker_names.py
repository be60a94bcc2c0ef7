"""Claiming a worker name at start against the real redis-server: RQ's record of a dead earlier life is
cleared, a live namesake (seen through /proc here, through its heartbeat from elsewhere) is refused."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest
from redis import Redis

from dispatcher import keys
from dispatcher.errors import WorkerNameTaken
from worker.names import IDENTITY_FIELD, claim, process_identity, start_time

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

NAME = "gpu0"
RQ_KEY = f"rq:worker:{NAME}"


@pytest.fixture
def redis(redis_url: str) -> Iterator[Redis]:
    client = Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


def _registered(redis: Redis, identity: str | None, **fields: str) -> None:
    """RQ's record of a live-looking worker (no death), as RQ's register_birth leaves it, plus our identity."""
    record = {"pid": "1", "hostname": "elsewhere", "queues": "comfy-dispatch", **fields}
    if identity:
        record[IDENTITY_FIELD] = identity
    redis.hset(RQ_KEY, mapping=record)
    redis.sadd("rq:workers", RQ_KEY)
    redis.sadd("rq:workers:comfy-dispatch", RQ_KEY)


def _identity_of(pid: int) -> str:
    here, start = process_identity(), start_time(pid)
    assert here is not None and start is not None
    boot, namespace, _, _ = here.split("/")
    return f"{boot}/{namespace}/{pid}/{start}"


def test_a_dead_earlier_life_on_this_machine_is_cleared_at_once(redis: Redis) -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    identity = _identity_of(child.pid)
    child.kill()  # an earlier life SIGKILLed
    child.wait()
    _registered(redis, identity)
    started = time.monotonic()
    claim(redis, NAME, quiet_seconds=30)
    assert time.monotonic() - started < 1  # a proof: no watching
    assert not redis.exists(RQ_KEY)
    assert not redis.sismember("rq:workers", RQ_KEY) and not redis.sismember("rq:workers:comfy-dispatch", RQ_KEY)


def test_a_live_namesake_on_this_machine_is_refused(redis: Redis) -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _registered(redis, _identity_of(child.pid))
        with pytest.raises(WorkerNameTaken, match=NAME):
            claim(redis, NAME, quiet_seconds=30)
    finally:
        child.kill()
        child.wait()
    assert redis.exists(RQ_KEY)


def test_a_namesake_elsewhere_is_dead_once_its_heartbeat_stays_still(redis: Redis) -> None:
    _registered(redis, "another-boot/pid:[1]/7/100")
    redis.hset(keys.worker(NAME), "last_seen", "1700000000.0")  # its last beat, not yet expired
    started = time.monotonic()
    claim(redis, NAME, quiet_seconds=0.6)
    assert 0.6 <= time.monotonic() - started < 2
    assert not redis.exists(RQ_KEY)


def test_a_namesake_elsewhere_that_beats_is_refused(redis: Redis) -> None:
    _registered(redis, None)  # an older record, without identity: judged by the heartbeat too
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(0.1):
            redis.hset(keys.worker(NAME), "last_seen", repr(time.time()))

    beating = threading.Thread(target=beat)
    beating.start()
    try:
        with pytest.raises(WorkerNameTaken):
            claim(redis, NAME, quiet_seconds=2)
    finally:
        stop.set()
        beating.join()
    assert redis.exists(RQ_KEY)


def test_a_recorded_death_or_no_record_leaves_nothing_to_do(redis: Redis) -> None:
    claim(redis, NAME, quiet_seconds=30)
    _registered(redis, "another-boot/pid:[1]/7/100", death="2026-01-01T00:00:00.000000Z")
    claim(redis, NAME, quiet_seconds=30)  # RQ registers over a recorded death itself
    assert redis.hget(RQ_KEY, "death")
