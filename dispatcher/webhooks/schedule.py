"""When a failed webhook delivery is tried again (pure).

After failed attempt ``n`` (1-based) the next one waits a delay drawn uniformly from
``[base, min(cap, base * 2**n)]``: exponential growth with full jitter, so receivers
coming back are not hit by every sender at once, above a floor of ``base`` so a
string of unlucky draws never hammers a receiver. Attempts stop ``retry_for``
seconds after the first one: the last is placed exactly at that bound, so however
the draws fall, a delivery is retried for the whole ``retry_for`` and a receiver
that comes back within it gets the message at most ``cap`` seconds later.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from dispatcher.backoff import backoff_ceiling

Uniform = Callable[[float, float], float]


@dataclass(frozen=True)
class RetrySchedule:
    base: float = 2.0
    cap: float = 300.0
    retry_for: float = 3600.0

    def delay(self, attempt: int, *, uniform: Uniform = random.uniform) -> float:
        """Seconds to wait after failed attempt ``attempt`` (1-based)."""
        ceiling = backoff_ceiling(attempt + 1, base=self.base, cap=self.cap)
        return uniform(self.base, max(self.base, ceiling))

    def next_at(self, *, first_at: float, now: float, delay: float) -> float | None:
        """When to try again after an attempt ending at ``now``; None once the time bound is reached."""
        deadline = first_at + self.retry_for
        if now >= deadline:
            return None
        return min(now + delay, deadline)

    def plan(
        self, *, attempt_seconds: float = 0.0, uniform: Uniform = random.uniform, max_attempts: int = 100_000
    ) -> list[float]:
        """Every attempt's start time (first at 0) against a receiver that never answers 2xx.

        ``attempt_seconds`` is how long each failing attempt takes (0: refused at once; the
        request timeout: a receiver that hangs). For tests and for the README's numbers.
        """
        times = [0.0]
        while len(times) < max_attempts:
            ended = times[-1] + attempt_seconds
            following = self.next_at(first_at=0.0, now=ended, delay=self.delay(len(times), uniform=uniform))
            if following is None:
                break
            times.append(following)
        return times
