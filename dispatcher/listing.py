"""A tenant's runs, newest first (``GET /v1/runs``): an index kept by the scripts that create runs, read in pages.

Every script that stores a run adds it to its tenant's sorted set (``keys.tenant_runs``) by creation time,
and trims what is older than twice the runs' lifetime (their records are gone by then). A page reads the
index downwards from its cursor and the records of what it found in one round trip; filters (status,
workflow) are applied to the records, so a page that filters looks at most :data:`SCAN_BUDGET` entries
and hands back a cursor to go on from: each request costs a bounded amount however many runs the tenant
has, and the client follows ``next_cursor`` until it is null.
"""

from __future__ import annotations

import base64
import math
from dataclasses import dataclass
from datetime import UTC, datetime

from redis import Redis

from dispatcher import keys
from dispatcher.errors import ParameterError
from dispatcher.runs import Run, RunStatus

MAX_LIMIT = 500
DEFAULT_LIMIT = 50
SCAN_BUDGET = 2000  # index entries one page may look at when filters skip most of them

LUA_INDEX = f"""
local function index_run(run_id, tenant, created, horizon)
  local index = '{keys.NS}:tenant:' .. tenant .. ':runs'
  redis.call('ZADD', index, created, run_id)
  redis.call('ZREMRANGEBYSCORE', index, '-inf', '(' .. tostring(tonumber(created) - tonumber(horizon)))
end
"""
"""Lua ``index_run(run_id, tenant, created, horizon)`` for the scripts that store a new run: ``horizon`` is
how far back (seconds) the index keeps runs."""


def index_horizon(run_ttl_seconds: int) -> int:
    """How long the index keeps a run: twice a finished run's lifetime (a queued run has no expiry yet)."""
    return 2 * run_ttl_seconds


@dataclass(frozen=True)
class Cursor:
    """Where a page stopped: below this creation time, or at it below this run id (ties broken by id)."""

    created: float
    run_id: str

    def encode(self) -> str:
        return base64.urlsafe_b64encode(f"{self.created!r}|{self.run_id}".encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str) -> Cursor:
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
            created, run_id = raw.split("|", 1)
            if not math.isfinite(float(created)):
                raise ValueError(created)  # a score no Redis range takes (nan), or none this API hands out
            return cls(float(created), run_id)
        except (ValueError, UnicodeDecodeError):
            raise ParameterError("cursor", "is not a cursor this API gave (pass next_cursor as it came)") from None


def parse_since(text: str) -> float:
    """``since`` as Unix seconds: an RFC 3339 time (a zone is needed, ``Z`` or an offset) or Unix seconds."""
    try:
        value = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(value) or value < 0:
            raise ParameterError("since", "must be a time after 1970 (RFC 3339, or Unix seconds)")
        return value
    try:
        when = datetime.fromisoformat(text.strip().replace("z", "Z"))
    except ValueError:
        raise ParameterError("since", "is not a time: give RFC 3339 (2026-12-01T09:00:00Z) or Unix seconds") from None
    if when.tzinfo is None:
        raise ParameterError("since", "needs a time zone (Z or an offset such as +01:00)")
    try:
        return max(0.0, when.astimezone(UTC).timestamp())
    except OverflowError:  # year 1 or 9999 pushed out of range by its offset
        raise ParameterError("since", "is out of range: give RFC 3339 (2026-12-01T09:00:00Z) or Unix seconds") from None


@dataclass(frozen=True)
class Page:
    runs: list[Run]
    next_cursor: str | None


@dataclass(frozen=True)
class Filters:
    status: RunStatus | None = None
    workflow: str | None = None
    since: float | None = None  # created at or after (Unix seconds)

    def admit(self, run: Run) -> bool:
        return (self.status is None or run.status is self.status) and (
            self.workflow is None or run.workflow == self.workflow
        )


def list_runs(
    redis: Redis, tenant: str, *, filters: Filters = Filters(), limit: int = DEFAULT_LIMIT, cursor: str | None = None
) -> Page:
    """One page of ``tenant``'s runs, newest first, matching ``filters``; ``redis`` decodes responses."""
    if not 1 <= limit <= MAX_LIMIT:
        raise ParameterError("limit", f"must be between 1 and {MAX_LIMIT}")
    after = Cursor.decode(cursor) if cursor else None
    found: list[Run] = []
    looked = 0
    while len(found) < limit and looked < SCAN_BUDGET:
        entries = _below(redis, keys.tenant_runs(tenant), after, filters.since, min(SCAN_BUDGET - looked, limit * 2))
        if not entries:
            return Page(found, None)  # the index is read to its end
        for (run_id, created), run in zip(entries, _read(redis, [r for r, _ in entries]), strict=True):
            looked += 1
            after = Cursor(created, run_id)
            if run is not None and filters.admit(run):
                found.append(run)
                if len(found) == limit:
                    break
    return Page(found, after.encode() if after is not None else None)


def _below(redis: Redis, index: str, after: Cursor | None, since: float | None, count: int) -> list[tuple[str, float]]:
    """Up to ``count`` index entries after ``after`` in newest-first order (by time, then id), none before ``since``."""
    floor = "-inf" if since is None else repr(since)
    if after is None:
        return redis.zrevrangebyscore(index, "+inf", floor, start=0, num=count, withscores=True)  # type: ignore[return-value]
    # Runs created in the same microsecond as the cursor's come first, those with a lower id.
    ties: list[tuple[str, float]] = redis.zrevrangebyscore(  # type: ignore[assignment]
        index, repr(after.created), repr(after.created), withscores=True
    )
    entries = sorted((e for e in ties if e[0] < after.run_id), key=lambda e: e[0], reverse=True)[:count]
    if len(entries) < count:
        older: list[tuple[str, float]] = redis.zrevrangebyscore(  # type: ignore[assignment]
            index, f"({after.created!r}", floor, start=0, num=count - len(entries), withscores=True
        )
        entries += older
    return entries


def _read(redis: Redis, run_ids: list[str]) -> list[Run | None]:
    pipe = redis.pipeline(transaction=False)
    for run_id in run_ids:
        pipe.hgetall(keys.run(run_id))
    return [Run.from_redis(data) if data else None for data in pipe.execute()]
