"""GPU-seconds and runs per tenant and UTC day: what each tenant used, for billing and capacity planning.

A run's GPU time is how long ComfyUI executed it, from ComfyUI's own timestamps (``execution_start``
to ``execution_success`` / ``execution_error`` / ``execution_interrupted``), summed over its attempts.
The scripts that end an attempt (``dispatcher.lease``) add it to the run (``gpu_seconds``) and to the
tenant's day (``keys.usage``) in the same step, and count the run in that day when it ends, if it
ever reached a worker (a cache hit or a run canceled while queued used no GPU).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from redis import Redis

from dispatcher import keys
from dispatcher.errors import ParameterError

USAGE_TTL_SECONDS = 400 * 86400
"""How long a day's totals are kept: a year and a month of history."""

MAX_DAYS = 366
"""The longest range one usage request may ask for."""

DEFAULT_DAYS = 30


def usage_day(timestamp: float) -> str:
    """The UTC day (``YYYY-MM-DD``) a Unix time falls in: the day an attempt's time is counted on."""
    return datetime.fromtimestamp(timestamp, tz=UTC).date().isoformat()


def parse_day(value: str, name: str) -> date:
    """``YYYY-MM-DD`` as a date; ParameterError naming ``name`` otherwise."""
    try:
        if len(value) == 10:
            return date.fromisoformat(value)
    except ValueError:
        pass
    raise ParameterError(name, "must be a date as YYYY-MM-DD")


def day_range(start: str | None, end: str | None, *, today: date) -> list[date]:
    """The days from ``start`` to ``end`` inclusive (default: the last 30 days up to ``today``).

    Raises ParameterError naming ``from`` or ``to`` for a malformed date, a range that runs backwards
    or one longer than :data:`MAX_DAYS`.
    """
    last = parse_day(end, "to") if end is not None else today
    try:
        first = parse_day(start, "from") if start is not None else last - timedelta(days=DEFAULT_DAYS - 1)
    except OverflowError:  # a default range that would start before year 1
        raise ParameterError("to", "is too early: give from as well") from None
    if first > last:
        raise ParameterError("from", "must not be after to")
    if (last - first).days >= MAX_DAYS:
        raise ParameterError("from", f"the range may span at most {MAX_DAYS} days")
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


@dataclass(frozen=True)
class DayUsage:
    date: str
    runs: int
    gpu_seconds: float


@dataclass(frozen=True)
class Usage:
    tenant: str
    days: list[DayUsage]

    @property
    def runs(self) -> int:
        return sum(d.runs for d in self.days)

    @property
    def gpu_seconds(self) -> float:
        return round(sum(d.gpu_seconds for d in self.days), 3)


def read_usage(redis: Redis, tenant: str, days: list[date]) -> Usage:
    """Every day of ``days`` for ``tenant`` (zeros where nothing ran), in one round trip."""
    pipe = redis.pipeline(transaction=False)
    for day in days:
        pipe.hmget(keys.usage(tenant, day.isoformat()), "runs", "gpu_seconds")
    rows: list[list[str | None]] = pipe.execute()
    return Usage(
        tenant,
        [
            DayUsage(day.isoformat(), int(runs or 0), round(float(gpu or 0.0), 3))
            for day, (runs, gpu) in zip(days, rows, strict=True)
        ],
    )
