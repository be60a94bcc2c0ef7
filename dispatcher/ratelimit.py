"""Leaky-bucket arithmetic, pure: no clock, no Redis.

A bucket holds at most ``burst`` units and leaks ``rate`` units per second. A request of ``cost``
units is admitted when it fits (``level + cost <= burst``) and then adds its cost; a denied request
changes nothing. Over any interval of ``T`` seconds a bucket admits at most ``rate * T + burst``
units, however fast requests arrive.

:mod:`dispatcher.admission` runs the same maths in one Lua script on Redis's clock; this module also
turns a decision into the IETF RateLimit header fields (draft-ietf-httpapi-ratelimit-headers).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# Float slack when comparing levels: a bucket that leaked exactly one unit must admit one more,
# even when the subtraction lands a hair above the mark.
EPSILON = 1e-9


@dataclass(frozen=True)
class Decision:
    """The outcome of offering one request to a bucket.

    ``level`` is the bucket's level after the decision (what to store when allowed);
    ``retry_after`` the seconds until this request would fit (0 when allowed); ``remaining`` how
    many more unit requests fit right now; ``reset`` the seconds until one more request of the
    same cost fits (0 if it already does).
    """

    allowed: bool
    level: float
    retry_after: float
    remaining: int
    reset: float


def check_limits(rate: float, burst: float, cost: float = 1) -> None:
    """Raise ValueError unless ``rate > 0`` and ``0 < cost <= burst`` (else no request could ever pass)."""
    if not rate > 0:
        raise ValueError(f"rate must be > 0, not {rate!r}")
    if not 0 < cost <= burst:
        raise ValueError(f"cost must be in (0, burst={burst!r}], not {cost!r}")


def leak(level: float, last: float, now: float, rate: float) -> float:
    """The level at ``now`` of a bucket that was at ``level`` at ``last``.

    A clock that went backwards (``now < last``) leaks nothing rather than filling the bucket.
    """
    return max(0.0, level - max(0.0, now - last) * rate)


def describe(allowed: bool, level: float, *, rate: float, burst: float, cost: float = 1) -> Decision:
    """The full decision, from whether the request passed and the bucket's level afterwards."""
    # Seconds until ``cost`` more units fit: the overflow, leaked away at ``rate``.
    wait = max(0.0, (level + cost - burst) / rate)
    if wait < EPSILON:
        wait = 0.0
    remaining = max(0, math.floor(burst - level + EPSILON))
    return Decision(allowed=allowed, level=level, retry_after=0.0 if allowed else wait, remaining=remaining, reset=wait)


def decide(level: float, last: float, now: float, *, rate: float, burst: float, cost: float = 1) -> Decision:
    """Offer a request of ``cost`` at ``now`` to a bucket last at ``level`` at ``last``.

    A fresh bucket is ``level=0`` (any ``last``). Raises ValueError for limits nothing could pass.
    """
    check_limits(rate, burst, cost)
    current = leak(level, last, now, rate)
    if current + cost <= burst + EPSILON:
        return describe(True, current + cost, rate=rate, burst=burst, cost=cost)
    return describe(False, current, rate=rate, burst=burst, cost=cost)


def ceil_seconds(seconds: float) -> int:
    """Whole seconds, rounded up, ignoring float noise (2.0000000001 is 2)."""
    return max(0, math.ceil(seconds - EPSILON))


def drain_window(rate: float, burst: float) -> int:
    """Seconds a full bucket takes to empty, rounded up (at least 1)."""
    return max(1, ceil_seconds(burst / rate))


def _sf_string(value: str) -> str:
    # An RFC 8941 sf-string: printable ASCII in double quotes, with \ and " escaped.
    if any(not 0x20 <= ord(ch) <= 0x7E for ch in value):
        raise ValueError(f"policy name {value!r} must be printable ASCII")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def headers(decision: Decision, *, rate: float, burst: float, policy_name: str = "submit") -> dict[str, str]:
    """The ``RateLimit-Policy`` and ``RateLimit`` fields of a decision, plus ``Retry-After`` when denied.

    ``RateLimit-Policy: "submit";q=<burst>;w=<seconds to drain a full bucket>`` and
    ``RateLimit: "submit";r=<remaining>;t=<seconds until there is room again>``, both in the
    structured-field form of draft-ietf-httpapi-ratelimit-headers. ``Retry-After`` is whole
    seconds, at least 1.
    """
    name = _sf_string(policy_name)
    fields = {
        "RateLimit-Policy": f"{name};q={math.floor(burst)};w={drain_window(rate, burst)}",
        "RateLimit": f"{name};r={decision.remaining};t={ceil_seconds(decision.reset)}",
    }
    if not decision.allowed:
        fields["Retry-After"] = str(max(1, ceil_seconds(decision.retry_after)))
    return fields
