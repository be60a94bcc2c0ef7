"""Requests waiting for runs to end (``?wait=``, the synchronous compatibility routes, cancel), all on one
pub/sub connection per API process.

Whoever ends a run PUBLISHes on the run's done channel in the same script that writes the terminal
record (``dispatcher.lease``). One task per process holds a PSUBSCRIBE to every done channel and wakes
the requests waiting for that run. A request registers first and reads the record second, so a run
that ends at any moment is seen either in the record or as a message. A waiting request holds no
thread and no connection of its own: no per-wait SUBSCRIBE round trip or new connection either. When
the subscription drops, every waiter reads its record again once it is back (a message may have been
missed meanwhile).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import redis.asyncio
from redis.exceptions import RedisError

from dispatcher import keys

log = logging.getLogger(__name__)

T = TypeVar("T")

DONE_PATTERN = keys.run_done_channel("*")
RECONNECT_SECONDS = 1.0


class RunWaits:
    """The process's waiting requests by run id, and the task that wakes them."""

    def __init__(self, client: redis.asyncio.Redis) -> None:
        self.client = client
        self._waiting: dict[str, set[asyncio.Event]] = {}
        self._subscribed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._listen(), name="run-waits")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def __len__(self) -> int:
        """How many requests wait now."""
        return sum(len(events) for events in self._waiting.values())

    async def wait(
        self, run_id: str, seconds: float, read: Callable[[], Awaitable[T]], ended: Callable[[T], bool]
    ) -> T:
        """``read()`` once ``ended`` says so, or as it is when ``seconds`` have passed.

        ``read`` gives the run's record (whatever the caller makes of it, None for a missing run counts as
        ended); it is read once at least, again after each wake-up.
        """
        deadline = time.monotonic() + max(seconds, 0.0)
        self.start()  # the first wait of a process not started by its app's lifespan (tests) starts it
        woken = asyncio.Event()
        self._waiting.setdefault(run_id, set()).add(woken)
        try:
            await self._until(self._subscribed.wait(), deadline)
            while True:
                woken.clear()
                record = await read()
                if ended(record) or not await self._until(woken.wait(), deadline):
                    return record
        finally:
            events = self._waiting.get(run_id)
            if events is not None:
                events.discard(woken)
                if not events:
                    del self._waiting[run_id]

    @staticmethod
    async def _until(event: Awaitable[object], deadline: float) -> bool:
        """Whether ``event`` came before ``deadline``."""
        try:
            await asyncio.wait_for(event, max(deadline - time.monotonic(), 0.0))
        except TimeoutError:
            return False
        return True

    async def _listen(self) -> None:
        while True:
            pubsub = self.client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.psubscribe(DONE_PATTERN)
                self._subscribed.set()
                self._wake_all()  # back after a drop: a message may have been missed, read again
                async for message in pubsub.listen():
                    if message.get("type") == "pmessage":
                        self._wake(str(message["channel"]).split(":")[2])
            except (RedisError, OSError) as exc:
                self._subscribed.clear()
                log.warning("run waits: Redis subscription lost (%s); again in %.0fs", exc, RECONNECT_SECONDS)
                await asyncio.sleep(RECONNECT_SECONDS)
            finally:
                try:
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
                except (RedisError, OSError):
                    pass  # closing a dead connection: nothing to save

    def _wake(self, run_id: str) -> None:
        for event in self._waiting.get(run_id, ()):
            event.set()

    def _wake_all(self) -> None:
        for events in self._waiting.values():
            for event in events:
                event.set()
