"""What an API process remembers: API keys checked recently (forgotten on revocation and whenever revocations
could be missed), and runs that just succeeded (api.waits.Ended)."""

from __future__ import annotations

import pytest

from api.keycache import KeyCache
from dispatcher.apikeys import Principal

ACME = Principal(tenant="acme", scopes=frozenset({"read"}), key_id="0123456789ab")
KEY = "cdk_0123456789ab_" + "s" * 43


@pytest.fixture
def cache() -> KeyCache:
    cache = KeyCache(ttl=60)
    cache.listening(True)
    return cache


def test_a_valid_key_is_remembered_under_its_whole_secret(cache: KeyCache) -> None:
    assert cache.get(KEY) is None
    cache.put(KEY, ACME, cache.generation)
    assert cache.get(KEY) == ACME
    assert cache.get(KEY[:-1] + "t") is None  # same key id, another secret: not this entry


def test_a_revocation_forgets_the_key(cache: KeyCache) -> None:
    cache.put(KEY, ACME, cache.generation)
    cache.forget("ffffffffffff")
    assert cache.get(KEY) == ACME
    cache.forget(ACME.key_id)
    assert cache.get(KEY) is None


def test_a_read_that_began_before_a_revocation_is_not_remembered(cache: KeyCache) -> None:
    generation = cache.generation  # the request reads the key's record...
    cache.forget(ACME.key_id)  # ...the key is revoked meanwhile (the record read may predate it)
    cache.put(KEY, ACME, generation)
    assert cache.get(KEY) is None


def test_nothing_is_remembered_while_revocations_could_be_missed(cache: KeyCache) -> None:
    cache.put(KEY, ACME, cache.generation)
    cache.listening(False)  # the subscription dropped
    assert cache.get(KEY) is None
    cache.put(KEY, ACME, cache.generation)
    cache.listening(True)  # back: it starts from nothing
    assert cache.get(KEY) is None


def test_entries_expire() -> None:
    cache = KeyCache(ttl=-1)
    cache.listening(True)
    cache.put(KEY, ACME, cache.generation)
    assert cache.get(KEY) is None


def test_it_is_bounded() -> None:
    cache = KeyCache(ttl=60, max_entries=2)
    cache.listening(True)
    for i in range(3):
        cache.put(f"{KEY}{i}", ACME, cache.generation)
    assert sum(cache.get(f"{KEY}{i}") is not None for i in range(3)) <= 2


def test_only_succeeded_runs_are_remembered_for_their_outputs() -> None:
    from api.waits import Ended
    from dispatcher.runs import RunStatus, new_run

    ended = Ended(seconds=60, size=2)
    done, failed = new_run("invert", {}), new_run("invert", {})
    done.status, failed.status = RunStatus.SUCCEEDED, RunStatus.FAILED
    ended.put(done)
    ended.put(failed)
    assert ended.get(done.id) is done and ended.get(failed.id) is None
    for _ in range(2):
        other = new_run("invert", {})
        other.status = RunStatus.SUCCEEDED
        ended.put(other)
    assert ended.get(done.id) is None  # the oldest made room
    assert Ended(seconds=-1).get(done.id) is None
