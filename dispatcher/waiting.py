"""Waiting for a run to end, woken by the run's done channel instead of polling its record.

Whoever ends a run (``dispatcher.lease``) writes the terminal record and PUBLISHes on
``keys.run_done_channel(run_id)`` in one script: ``{"status", "run"}``, the status and the whole
record as that script left it (:func:`parse_done`). A waiter subscribes first and reads the
record second, so a run that ends at any moment is seen either in the record or as a message.
"""

from __future__ import annotations

import json
import logging
import time

from redis import Redis
from redis.client import PubSub

from dispatcher import keys
from dispatcher.runs import Run, RunStore, run_of

log = logging.getLogger(__name__)


def parse_done(data: str) -> tuple[str, Run | None]:
    """A done message: the run's final status, and its record when the message carries it (a bare status,
    as older versions sent, carries none)."""
    try:
        message = json.loads(data)
    except ValueError:
        return data, None
    if not isinstance(message, dict) or not isinstance(message.get("status"), str):
        return data, None
    record = message.get("run")
    return message["status"], run_of(record) if isinstance(record, dict) and record else None


# How long to wait for Redis to confirm the SUBSCRIBE; only a dead or frozen Redis takes this long.
SUBSCRIBE_CONFIRM_SECONDS = 5.0


def wait_for_run(redis: Redis, runs: RunStore, run_id: str, timeout: float) -> Run | None:
    """Block until run ``run_id`` is terminal or ``timeout`` seconds have passed; return its latest record.

    Returns None when the run does not exist. The returned run may still be queued or running
    when the time is up: callers check ``run.status.terminal``. Blocks the calling thread, never
    polls: run it in a thread pool when called from an event loop.
    """
    deadline = time.monotonic() + max(timeout, 0.0)
    pubsub: PubSub = redis.pubsub()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
    try:
        pubsub.subscribe(keys.run_done_channel(run_id))
        # SUBSCRIBE travels on its own connection: the record must only be read once Redis has
        # confirmed it, or a run ending between our read and the subscription would go unseen.
        _await_confirmation(pubsub, run_id)
        run = runs.get(run_id)
        if run is None or run.status.terminal:
            return run
        while (remaining := deadline - time.monotonic()) > 0:
            message = pubsub.get_message(ignore_subscribe_messages=True, timeout=remaining)
            if message is not None and message.get("type") == "message":
                break
        # Read again even after a message: the record, not the message, is the truth (outputs, error).
        return runs.get(run_id)
    finally:
        pubsub.close()


def _await_confirmation(pubsub: PubSub, run_id: str) -> None:
    deadline = time.monotonic() + SUBSCRIBE_CONFIRM_SECONDS
    while (remaining := deadline - time.monotonic()) > 0:
        message = pubsub.get_message(timeout=remaining)
        if message is not None and message.get("type") == "subscribe":
            return
    log.warning("Redis did not confirm the subscription to run %s's done channel in time", run_id)
