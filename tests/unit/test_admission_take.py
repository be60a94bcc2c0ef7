"""dispatcher.admission.Admission.take_up_to: a batch takes as many whole submissions as its key's bucket holds
now, on fakeredis."""

from __future__ import annotations

import pytest

from dispatcher import keys
from dispatcher.admission import Admission
from dispatcher.connections import Connections
from dispatcher.settings import Settings
from dispatcher.tenants import TenantStore

SLOW = 0.01  # units a second: nothing leaks noticeably while a test runs


@pytest.fixture
def admission(fake_conns: Connections) -> Admission:
    return Admission(fake_conns.text)


def level(fake_conns: Connections, ident: str = "k1") -> float:
    return float(fake_conns.text.hget(keys.bucket("submit", ident), "level") or 0)  # type: ignore[arg-type]


def test_a_batch_bigger_than_the_bucket_takes_what_it_holds(admission: Admission, fake_conns: Connections) -> None:
    taken, admitted = admission.take_up_to("k1", "acme", 25, rate=SLOW, burst=10)
    assert taken == 10 and admitted.taken == 10
    assert admitted.decision.allowed and admitted.decision.retry_after == 0
    assert admitted.decision.remaining == 0
    assert (admitted.rate, admitted.burst) == (SLOW, 10)
    assert level(fake_conns) == pytest.approx(10, abs=0.01)


def test_an_empty_bucket_takes_nothing_and_says_when_to_come_back(
    admission: Admission, fake_conns: Connections
) -> None:
    admission.take_up_to("k1", "acme", 25, rate=SLOW, burst=10)
    taken, admitted = admission.take_up_to("k1", "acme", 25, rate=SLOW, burst=10)
    assert taken == 0 and admitted.taken == 0
    assert not admitted.decision.allowed
    # one unit leaks in 1/rate seconds (a hair less: some leaked since the first batch)
    assert 0 < admitted.decision.retry_after <= 1 / SLOW
    assert admitted.decision.retry_after == pytest.approx(1 / SLOW, rel=0.01)
    assert level(fake_conns) == pytest.approx(10, abs=0.01)  # a refusal leaves the bucket as it was


@pytest.mark.parametrize(("burst", "count"), [(10, 1), (10, 4), (10, 10), (1, 1), (1000, 999)])
def test_a_batch_that_fits_is_taken_whole(
    admission: Admission, fake_conns: Connections, burst: int, count: int
) -> None:
    taken, admitted = admission.take_up_to("k1", "acme", count, rate=SLOW, burst=burst)
    assert taken == count and admitted.decision.allowed
    assert admitted.decision.remaining == burst - count
    assert level(fake_conns) == pytest.approx(count, abs=0.01)


def test_batches_share_the_bucket(admission: Admission) -> None:
    assert admission.take_up_to("k1", "acme", 4, rate=SLOW, burst=10)[0] == 4
    assert admission.take_up_to("k1", "acme", 25, rate=SLOW, burst=10)[0] == 6
    assert admission.take_up_to("k1", "acme", 1, rate=SLOW, burst=10)[0] == 0


def test_single_submissions_and_batches_share_the_bucket(admission: Admission) -> None:
    for _ in range(3):
        assert admission.check_tenant("k1", "acme", rate=SLOW, burst=10).decision.allowed
    assert admission.take_up_to("k1", "acme", 25, rate=SLOW, burst=10)[0] == 7
    assert not admission.check_tenant("k1", "acme", rate=SLOW, burst=10).decision.allowed


def test_each_key_has_its_own_bucket(admission: Admission) -> None:
    assert admission.take_up_to("k1", "acme", 25, rate=SLOW, burst=10)[0] == 10
    assert admission.take_up_to("k2", "acme", 25, rate=SLOW, burst=10)[0] == 10


def test_whole_submissions_only(admission: Admission, fake_conns: Connections) -> None:
    # half a unit of room is no room: a batch never takes a fraction of a run
    # a "last" in the far future: a clock gone backwards leaks nothing, so the level stays as set
    fake_conns.text.hset(keys.bucket("submit", "k1"), mapping={"level": "9.5", "ts": "99999999999"})
    taken, admitted = admission.take_up_to("k1", "acme", 3, rate=SLOW, burst=10)
    assert taken == 0 and not admitted.decision.allowed
    assert admitted.decision.retry_after == pytest.approx(0.5 / SLOW, rel=0.01)
    fake_conns.text.hset(keys.bucket("submit", "k1"), mapping={"level": "7.5", "ts": "99999999999"})
    assert admission.take_up_to("k1", "acme", 3, rate=SLOW, burst=10)[0] == 2


def test_a_fast_bucket_has_room_again_soon(admission: Admission) -> None:
    assert admission.take_up_to("k1", "acme", 5, rate=1000.0, burst=5)[0] == 5
    _, admitted = admission.take_up_to("k1", "acme", 5, rate=1000.0, burst=5)
    assert admitted.decision.allowed or admitted.decision.retry_after <= 0.001


def test_the_tenants_own_limits_win(admission: Admission, fake_conns: Connections) -> None:
    TenantStore(fake_conns.text, Settings()).set("acme", submit_burst=5, submit_rate=SLOW)
    taken, admitted = admission.take_up_to("k1", "acme", 8, rate=100.0, burst=100)
    assert taken == 5 and (admitted.rate, admitted.burst) == (SLOW, 5)
    assert admission.take_up_to("k2", "other", 8, rate=100.0, burst=100)[0] == 8  # the defaults elsewhere


@pytest.mark.parametrize(("rate", "burst"), [(0.0, 10), (-1.0, 10), (1.0, 0), (1.0, 0.5)])
def test_limits_nothing_could_pass_are_refused(admission: Admission, rate: float, burst: float) -> None:
    with pytest.raises(ValueError):
        admission.take_up_to("k1", "acme", 3, rate=rate, burst=burst)
