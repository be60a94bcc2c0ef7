"""The dead-letter set: runs that failed with every attempt used, kept until someone requeues them."""

from __future__ import annotations

import time

from redis import Redis

from dispatcher import keys
from dispatcher.events import LUA_EMIT
from dispatcher.runs import Run, RunStore

_REQUEUE = (
    LUA_EMIT
    + """
-- KEYS: run, DEAD_LETTER, backlog, rotation, events. ARGV: run_id, tenant, now, wake channel
if redis.call('ZREM', KEYS[2], ARGV[1]) == 0 then return 0 end
if redis.call('HGET', KEYS[1], 'status') ~= 'failed' then return 0 end
redis.call('HSET', KEYS[1], 'status', 'queued', 'attempts', '0', 'error', '', 'finished_at', '', 'started_at', '',
           'progress', '0', 'cancel_requested', '')
if redis.call('ZCARD', KEYS[3]) == 0 then
  redis.call('LREM', KEYS[4], 0, ARGV[2])
  redis.call('RPUSH', KEYS[4], ARGV[2])
end
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
redis.call('PERSIST', KEYS[5])  -- its events expire with the run again, when it ends
batch_reopen(redis.call('HGET', KEYS[1], 'batch'))
emit(ARGV[1], 'queued', '{"requeued":true}')
redis.call('PUBLISH', ARGV[4], 'requeue')
return 1
"""
)


class DeadLetters:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis  # decode_responses=True
        self.runs = RunStore(redis)
        self._requeue = redis.register_script(_REQUEUE)

    def runs_listed(self, limit: int = 100) -> list[Run]:
        """Dead-lettered runs, oldest failure first."""
        ids: list[str] = self.redis.zrange(keys.DEAD_LETTER, 0, limit - 1)  # type: ignore[assignment]
        runs = [self.runs.get(run_id) for run_id in ids]
        return [run for run in runs if run is not None]

    def ids(self) -> list[str]:
        found: list[str] = self.redis.zrange(keys.DEAD_LETTER, 0, -1)  # type: ignore[assignment]
        return found

    def requeue(self, run_id: str) -> bool:
        """Queue a dead-lettered run again with fresh attempts; False if it is not in the set."""
        run = self.runs.get(run_id)
        if run is None:
            self.redis.zrem(keys.DEAD_LETTER, run_id)  # its record expired: nothing left to run
            return False
        return bool(
            self._requeue(
                keys=[
                    keys.run(run_id),
                    keys.DEAD_LETTER,
                    keys.backlog(run.tenant, run.priority),
                    keys.rotation(run.priority),
                    keys.run_events(run_id),
                ],
                args=[run_id, run.tenant, repr(time.time()), keys.SCHEDULER_WAKE],
            )
        )
