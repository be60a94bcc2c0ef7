"""The most recent runs, newest first: what the Flask seed's ``/api/history`` lists.

Run records live under their own keys and expire on their own; this capped list only remembers
the order runs were accepted in. An id whose record has expired is skipped when read.
"""

from __future__ import annotations

from redis import Redis

from dispatcher import keys
from dispatcher.runs import Run


def recent_runs(redis: Redis, limit: int) -> list[Run]:
    """Up to ``limit`` recent runs whose records still exist, newest first (``redis`` must decode responses)."""
    ids: list[str] = redis.lrange(keys.RECENT_RUNS, 0, max(limit, 1) - 1)  # type: ignore[assignment]
    pipe = redis.pipeline(transaction=False)
    for run_id in ids:
        pipe.hgetall(keys.run(run_id))
    records: list[dict[str, str]] = pipe.execute()
    return [Run.from_redis(data) for data in records if data and "status" in data]
