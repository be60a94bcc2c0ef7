"""How many requests of one tenant may wait at once in an API process (pure)."""

from __future__ import annotations

import pytest

from api.waits import WaitQuota
from dispatcher.errors import TooManyWaits


def test_each_tenant_has_its_own_quota() -> None:
    quota = WaitQuota(2)
    quota.take("a")
    quota.take("a")
    with pytest.raises(TooManyWaits) as refused:
        quota.take("a")
    assert refused.value.retry_after == 1.0 and quota.held("a") == 2
    quota.take("b")  # another tenant is not held back
    quota.give("a")
    quota.take("a")
    assert (quota.held("a"), quota.held("b")) == (2, 1)


def test_a_slot_is_given_back_whatever_happens() -> None:
    quota = WaitQuota(1)
    with pytest.raises(RuntimeError), quota.slot("a"):
        raise RuntimeError("the wait failed")
    assert quota.held("a") == 0
    with quota.slot("a"):
        assert quota.held("a") == 1
    assert quota.held("a") == 0
