"""The most recent runs, newest first: what the Flask seed's ``/api/history`` lists.

Run records live under their own keys and expire on their own; this capped list only remembers
the order runs were accepted in, over every tenant. An id whose record has expired is skipped
when read, and so is a run of another tenant than the one asked for.
"""

from __future__ import annotations

from redis import Redis

from dispatcher import keys
from dispatcher.runs import Run

PAGE = 100


def recent_runs(redis: Redis, limit: int, *, tenant: str | None = None) -> list[Run]:
    """Up to ``limit`` recent runs (of ``tenant``, if given) whose records still exist, newest first.

    ``redis`` must decode responses. The list is read a page at a time, so a tenant whose runs are
    few among others' still gets its own most recent ones.
    """
    limit = max(limit, 1)
    found: list[Run] = []
    start = 0
    while len(found) < limit and start < keys.RECENT_RUNS_MAX:
        size = limit if tenant is None else max(limit, PAGE)
        ids: list[str] = redis.lrange(keys.RECENT_RUNS, start, start + size - 1)  # type: ignore[assignment]
        if not ids:
            break
        pipe = redis.pipeline(transaction=False)
        for run_id in ids:
            pipe.hgetall(keys.run(run_id))
        records: list[dict[str, str]] = pipe.execute()
        runs = (Run.from_redis(data) for data in records if data and "status" in data)
        found += [run for run in runs if tenant is None or run.tenant == tenant]
        if tenant is None:
            break  # without a filter, one read of ``limit`` ids is the answer, as before
        start += size
    return found[:limit]
