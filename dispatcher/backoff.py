"""Retry delays: exponential backoff with full jitter (pure)."""

from __future__ import annotations

import random
from collections.abc import Callable


def backoff_ceiling(attempt: int, *, base: float = 1.0, cap: float = 60.0) -> float:
    """The largest delay after failed attempt number ``attempt`` (1-based): ``min(cap, base * 2**(attempt-1))``."""
    if attempt < 1:
        raise ValueError("attempt is 1-based")
    return min(cap, base * 2.0 ** min(attempt - 1, 62))


def full_jitter(
    attempt: int, *, base: float = 1.0, cap: float = 60.0, uniform: Callable[[float, float], float] = random.uniform
) -> float:
    """A delay drawn uniformly from ``[0, backoff_ceiling(attempt)]`` (AWS's "full jitter")."""
    return uniform(0.0, backoff_ceiling(attempt, base=base, cap=cap))
