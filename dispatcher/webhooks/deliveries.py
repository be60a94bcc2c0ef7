"""Webhook messages and the record of every attempt to deliver them, kept in Redis.

A :class:`Delivery` is one message (one event of one run) for one callback URL; the
relay makes it, RQ jobs carry it from attempt to attempt. Each attempt is appended
to the run's list (``keys.run_deliveries``: capped, expiring with the run) as an
:class:`Attempt`, which ``GET /v1/runs/{id}/deliveries`` shows.

RQ may run a job twice (RQ-NOTES), and a job's watchdog may fire while it still
runs, so every attempt first *begins* in one Lua script: it is refused if the
message was already delivered or given up, or if an attempt with that number (or a
later one) was already made. So attempt ``n`` of a message is made at most once.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, replace
from enum import StrEnum
from typing import Any

from redis import Redis

from dispatcher import keys

MAX_ATTEMPTS_KEPT = 500
"""Attempts kept per run (the newest); a run's progress events and their retries all count."""

_BEGIN = """
-- KEYS: message; ARGV: attempt, ttl
local state = redis.call('HGET', KEYS[1], 'state')
if state and state ~= 'pending' then return 0 end
if tonumber(redis.call('HGET', KEYS[1], 'attempts') or '0') >= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'state', 'pending', 'attempts', ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
"""


class Outcome(StrEnum):
    DELIVERED = "delivered"  # the receiver answered 2xx
    RETRYING = "retrying"  # failed; another attempt is scheduled
    GAVE_UP = "gave_up"  # failed, and the time bound is reached: no more attempts


@dataclass(frozen=True)
class Delivery:
    """One message for one callback URL, as RQ jobs carry it from attempt to attempt."""

    webhook_id: str
    run_id: str
    tenant: str
    event: str  # the run event's type: queued, started, progress, output, retrying, done, error, canceled
    url: str
    body: str  # the exact JSON sent and signed, the same on every attempt
    first_at: float  # when the first attempt was due: the retry bound counts from here
    attempt: int = 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Delivery:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__})

    def following(self) -> Delivery:
        return replace(self, attempt=self.attempt + 1)

    @property
    def job_id(self) -> str:
        """The RQ job id of this attempt (RQ ids: letters, digits, ``_`` and ``-``)."""
        return f"{self.webhook_id}-a{self.attempt}"


@dataclass(frozen=True)
class Attempt:
    """One try at delivering a message, as recorded and as the deliveries route shows it."""

    webhook_id: str
    event: str
    url: str
    attempt: int
    at: float  # when the attempt began, Unix time
    status_code: int | None  # None: no HTTP answer (refused address, connection error, timeout)
    error: str | None
    outcome: Outcome
    next_at: float | None = None  # when the next attempt is due (outcome retrying)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: str) -> Attempt:
        data = json.loads(raw)
        data["outcome"] = Outcome(data["outcome"])
        return cls(**{k: data.get(k) for k in cls.__dataclass_fields__})


class DeliveryLog:
    """The fence that makes each attempt once, and the record of every attempt made."""

    def __init__(self, redis: Redis, *, keep_seconds: int) -> None:
        self.redis = redis  # decode_responses=True
        self.keep_seconds = keep_seconds  # how long attempt records and message states are kept
        self._begin = redis.register_script(_BEGIN)

    def begin(self, delivery: Delivery, *, until: float) -> bool:
        """Whether ``delivery``'s attempt may be made now (see the module docstring).

        ``until`` is when its last attempt may happen: the message's state is kept a while past it.
        """
        ttl = max(int(until - time.time()), 0) + self.keep_seconds
        return bool(self._begin(keys=[keys.webhook_message(delivery.webhook_id)], args=[delivery.attempt, ttl]))

    def record(self, delivery: Delivery, attempt: Attempt) -> None:
        """Append ``attempt`` to its run's list; a final outcome also ends the message (no attempt after it)."""
        pipe = self.redis.pipeline(transaction=True)
        listed = keys.run_deliveries(delivery.run_id)
        pipe.rpush(listed, attempt.to_json())
        pipe.ltrim(listed, -MAX_ATTEMPTS_KEPT, -1)
        pipe.expire(listed, self.keep_seconds)
        if attempt.outcome is not Outcome.RETRYING:
            pipe.hset(keys.webhook_message(delivery.webhook_id), "state", attempt.outcome.value)
        pipe.execute()

    def attempts(self, run_id: str) -> list[Attempt]:
        """Every recorded attempt of the run's messages, oldest first."""
        raw: list[str] = self.redis.lrange(keys.run_deliveries(run_id), 0, -1)  # type: ignore[assignment]
        return [Attempt.from_json(item) for item in raw]

    def state(self, webhook_id: str) -> str | None:
        """pending, delivered or gave_up; None for a message never attempted (or long forgotten)."""
        value: str | None = self.redis.hget(keys.webhook_message(webhook_id), "state")  # type: ignore[assignment]
        return value
