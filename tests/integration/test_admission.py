"""dispatcher.admission: the Lua leaky bucket on a real redis-server, alone and under concurrent clients.

Also through the API (fakeredis): a 429 stores nothing, and each API key has its own bucket.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from redis import Redis

from api.app import create_app
from dispatcher import keys
from dispatcher.admission import TTL_WINDOWS, Admission
from dispatcher.apikeys import ApiKeyStore
from dispatcher.connections import Connections
from dispatcher.ratelimit import decide
from dispatcher.settings import load_settings
from dispatcher.storage import MemoryStore
from tests.api.helpers import Backlog, TestClient, assert_problem, tenant_with_key


@pytest.fixture
def redis(redis_url: str) -> Iterator[Redis]:
    client = Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


def server_now(redis: Redis) -> float:
    seconds, micros = redis.time()  # type: ignore[misc]
    return float(seconds) + float(micros) / 1e6


@pytest.mark.redis
def test_burst_then_denied_and_a_denial_changes_nothing(redis: Redis) -> None:
    admission = Admission(redis)
    decisions = [admission.check("k1", rate=0.5, burst=3) for _ in range(3)]
    assert [d.allowed for d in decisions] == [True, True, True]
    assert [d.remaining for d in decisions] == [2, 1, 0]
    before = redis.hgetall(keys.bucket("submit", "k1"))
    denied = admission.check("k1", rate=0.5, burst=3)
    assert not denied.allowed
    assert 1.9 < denied.retry_after <= 2.0  # one unit leaks in 1 / 0.5 s
    assert redis.hgetall(keys.bucket("submit", "k1")) == before
    assert 0 < redis.ttl(keys.bucket("submit", "k1")) <= TTL_WINDOWS * 6


@pytest.mark.redis
@pytest.mark.parametrize(
    ("level", "cost", "burst"), [(2.0, 1, 3), (2.5, 1, 3), (0.0, 3, 3), (1.0, 3, 3), (9.25, 1, 10)]
)
def test_the_script_decides_as_the_pure_function(redis: Redis, level: float, cost: int, burst: int) -> None:
    # A last update in the future (a clock gone backwards) leaks nothing: both sides see the same level.
    last = server_now(redis) + 1000
    redis.hset(keys.bucket("submit", "k"), mapping={"level": repr(level), "ts": repr(last)})
    got = Admission(redis).check("k", rate=2.0, burst=burst, cost=cost)
    assert got == decide(level, last, last, rate=2.0, burst=burst, cost=cost)


@pytest.mark.redis
def test_the_bucket_leaks_on_the_server_clock(redis: Redis) -> None:
    now = server_now(redis)
    redis.hset(keys.bucket("submit", "k"), mapping={"level": "5", "ts": repr(now - 2.0)})
    got = Admission(redis).check("k", rate=1.0, burst=5)
    assert got.allowed and 3.9 <= got.level <= 4.0  # leaked about 2, took 1


@pytest.mark.redis
def test_two_keys_have_separate_buckets(redis: Redis) -> None:
    admission = Admission(redis)
    assert admission.check("a", rate=0.01, burst=1).allowed
    assert not admission.check("a", rate=0.01, burst=1).allowed
    assert admission.check("b", rate=0.01, burst=1).allowed


@pytest.mark.redis
@pytest.mark.slow
def test_concurrent_clients_at_three_times_the_rate_stay_within_rate_times_time_plus_burst(redis_url: str) -> None:
    rate, burst, clients, seconds = 20.0, 10, 4, 10.0
    per_client = 3 * rate / clients  # offers per second of each client: together, 3x the rate
    accepted, offered = [0] * clients, [0] * clients
    stamps: list[float] = []
    lock = threading.Lock()
    start = time.monotonic() + 0.2  # every client ready before the first offer

    def client(index: int) -> None:
        conn = Redis.from_url(redis_url, decode_responses=True)  # each client its own connection
        admission = Admission(conn)
        try:
            n = 0
            while True:
                at = start + (n + index / clients) / per_client  # interleaved, evenly spaced
                if at > start + seconds:
                    break
                time.sleep(max(0.0, at - time.monotonic()))
                if admission.check("shared-key", rate=rate, burst=burst).allowed:
                    accepted[index] += 1
                offered[index] += 1
                with lock:
                    stamps.append(time.monotonic())
                n += 1
        finally:
            conn.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + 10)
    elapsed = max(stamps) - min(stamps)
    expected = rate * elapsed + burst
    assert sum(offered) >= 2.9 * rate * seconds
    assert abs(sum(accepted) - expected) <= 0.05 * expected, (sum(accepted), expected, sum(offered))


@pytest.fixture
def client(fake_conns: Connections) -> Iterator[TestClient]:
    with TestClient(create_app(load_settings({}), conns=fake_conns, store=MemoryStore())) as test_client:
        yield test_client


def test_a_429_stores_nothing(client: TestClient, fake_conns: Connections) -> None:
    key = tenant_with_key(fake_conns, "acme", submit_rate=0.001, submit_burst=1)
    headers = {"X-API-KEY": key}
    assert client.post("/v1/workflows/invert/runs", json={}, headers=headers).status_code == 202
    snapshot = {name: fake_conns.text.type(name) for name in fake_conns.text.keys("*")}
    for path, body in [
        ("/v1/workflows/invert/runs", {}),
        ("/api/workflow/txt2img", {"prompt": "x"}),
        ("/api/open/v0/run", {"workflow_id": "invert"}),
        ("/v1/api/workflow/run/invert", {"input": {}}),
    ]:
        assert_problem(client.post(path, json=body, headers=headers), 429)
    backlog = Backlog(fake_conns)
    assert backlog.count == 1 and backlog.records == 1
    assert fake_conns.text.llen(keys.RECENT_RUNS) == 1
    assert {name: fake_conns.text.type(name) for name in fake_conns.text.keys("*")} == snapshot


def test_two_api_keys_of_one_tenant_have_separate_buckets(client: TestClient, fake_conns: Connections) -> None:
    first = tenant_with_key(fake_conns, "acme", submit_rate=0.001, submit_burst=1)
    _, second = ApiKeyStore(fake_conns.text).create("acme", "submit,read")
    for key in (first, second):
        assert client.post("/v1/workflows/invert/runs", json={}, headers={"X-API-KEY": key}).status_code == 202
    for key in (first, second):
        assert_problem(client.post("/v1/workflows/invert/runs", json={}, headers={"X-API-KEY": key}), 429)
    assert Backlog(fake_conns).count == 2
