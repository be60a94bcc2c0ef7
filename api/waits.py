"""Requests waiting for runs to end (``?wait=``, the synchronous compatibility routes, cancel), all on one
pub/sub connection per API process.

Whoever ends a run PUBLISHes on the run's done channel in the same script that writes the terminal
record (``dispatcher.lease``). One task per process holds a PSUBSCRIBE to every done channel and wakes
the requests waiting for that run. A request registers first and reads the record second, so a run
that ends at any moment is seen either in the record or as a message; one that stores the run itself
registers before storing it (:meth:`RunWaits.watching`), and reads nothing before it waits. A waiting request holds no
thread and no connection of its own: no per-wait SUBSCRIBE round trip or new connection either. When
the subscription drops, every waiter reads its record again once it is back (a message may have been
missed meanwhile).

The same connection carries the process's other notices: channels given as ``channels`` (API key
revocations for :mod:`api.keycache`), and ``on_listening`` hears when they can (not) be heard.

:class:`WaitQuota` bounds how many requests of one tenant wait at once in a process (waits and event
streams alike, ``COMFY_DISPATCH_MAX_WAITS_PER_TENANT``): beyond it a read answers 429, and a request
that has already stored or changed a run answers at once instead of waiting (never an error).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager, nullcontext
from typing import TypeVar

import redis.asyncio
from redis.exceptions import RedisError

from dispatcher import keys
from dispatcher.errors import TooManyWaits
from dispatcher.runs import Run, RunStatus

log = logging.getLogger(__name__)

T = TypeVar("T")

DONE_PATTERN = keys.run_done_channel("*")
RECONNECT_SECONDS = 1.0


class WaitQuota:
    """How many requests of each tenant wait in this process now; used from the event loop only (no lock)."""

    def __init__(self, per_tenant: int) -> None:
        self.per_tenant = per_tenant
        self._held: dict[str, int] = {}

    def held(self, tenant: str) -> int:
        return self._held.get(tenant, 0)

    def take(self, tenant: str) -> None:
        """Count one more waiting request of ``tenant``; TooManyWaits (nothing counted) when it has its most."""
        held = self._held.get(tenant, 0)
        if held >= self.per_tenant:
            raise TooManyWaits(tenant, self.per_tenant)
        self._held[tenant] = held + 1

    def give(self, tenant: str) -> None:
        held = self._held.get(tenant, 0) - 1
        if held > 0:
            self._held[tenant] = held
        else:
            self._held.pop(tenant, None)

    @contextmanager
    def slot(self, tenant: str) -> Iterator[None]:
        self.take(tenant)
        try:
            yield
        finally:
            self.give(tenant)


STOP_SECONDS = 5.0


class RunWaits:
    """The process's waiting requests by run id, and the task that wakes them."""

    def __init__(
        self,
        client: redis.asyncio.Redis,
        *,
        channels: dict[str, Callable[[str], None]] | None = None,
        on_listening: Callable[[bool], None] = lambda listening: None,
    ) -> None:
        self.client = client
        self.channels = dict(channels or {})
        self.on_listening = on_listening
        self._waiting: dict[str, set[Watch]] = {}
        self._subscribed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._listen(), name="run-waits")

    async def stop(self) -> None:
        self.on_listening(False)
        if self._task is not None:
            self._task.cancel()
            # Not waited for past STOP_SECONDS: a listener stuck closing its connection must not hold up the
            # process's shutdown (asyncio.wait neither raises nor waits for the task once the time is up).
            done, _ = await asyncio.wait({self._task}, timeout=STOP_SECONDS)
            if not done:
                log.warning("run waits: the listener did not stop within %.0fs; leaving it", STOP_SECONDS)
            self._task = None

    def __len__(self) -> int:
        """How many requests wait now."""
        return sum(len(waiters) for waiters in self._waiting.values())

    @contextmanager
    def watching(self, run_id: str) -> Iterator[Watch]:
        """Wake-ups for ``run_id`` from now on, even before the run exists: a submission that waits for its run
        registers before its script stores it (see :meth:`wait`'s ``known``)."""
        self.start()  # the first wait of a process not started by its app's lifespan (tests) starts it
        watch = Watch(run_id, complete=self._subscribed.is_set())
        self._waiting.setdefault(run_id, set()).add(watch)
        try:
            yield watch
        finally:
            watches = self._waiting.get(run_id)
            if watches is not None:
                watches.discard(watch)
                if not watches:
                    del self._waiting[run_id]

    async def wait(
        self,
        run_id: str,
        seconds: float,
        read: Callable[[], Awaitable[T]],
        ended: Callable[[T], bool],
        parse: Callable[[str], T | None] = lambda message: None,
        *,
        watch: Watch | None = None,
        known: T | None = None,
    ) -> T:
        """``read()`` once ``ended`` says so, or as it is when ``seconds`` have passed.

        ``read`` gives the run's record (whatever the caller makes of it); it is read first, and again after
        each wake-up, unless ``parse`` finds the record in the message that woke it (the done message carries
        it: one round trip less on every answer). With ``watch`` (from :meth:`watching`, registered before the
        run was stored) and ``known`` (the record the run was stored with), there is no first read: every
        message since the run exists reaches ``watch``, provided the subscription was up when it registered (a
        drop since wakes it to read again). Then ``read`` runs only if no message tells the end in time.
        """
        deadline = time.monotonic() + max(seconds, 0.0)
        with nullcontext(watch) if watch is not None else self.watching(run_id) as waiter:
            if known is not None and watch is not None and watch.complete:
                record, current = known, False  # current: ``record`` was read, or told by a message
            else:
                await self._until(self._subscribed, deadline)
                record, current = await read(), True  # a message meanwhile sets ``woken``: the loop below sees it
            while not ended(record):
                if not await self._until(waiter.woken, deadline):
                    return record if current else await read()  # the time is up: as it is now
                current = True
                waiter.woken.clear()  # before reading: a message during the read is not lost
                told = parse(waiter.message) if waiter.message is not None else None
                record = told if told is not None else await read()
            return record

    @staticmethod
    async def _until(event: asyncio.Event, deadline: float) -> bool:
        """Whether ``event`` is set before ``deadline``."""
        if event.is_set():
            return True
        try:  # a timeout scope, not wait_for: no task of its own for each wait
            async with asyncio.timeout(max(deadline - time.monotonic(), 0.0)):
                await event.wait()
        except TimeoutError:
            return False
        return True

    async def _listen(self) -> None:
        while True:
            pubsub = self.client.pubsub()
            try:
                await pubsub.psubscribe(DONE_PATTERN)
                if self.channels:
                    await pubsub.subscribe(*self.channels)
                confirmations = 1 + len(self.channels)
                async for message in pubsub.listen():
                    kind = message.get("type")
                    if kind in ("subscribe", "psubscribe"):
                        # Only once Redis confirmed every subscription is a message sure to reach us.
                        confirmations -= 1
                        if confirmations == 0:
                            self._subscribed.set()
                            self.on_listening(True)
                            self._wake_all()  # back after a drop: a message may have been missed, read again
                    elif kind == "pmessage":
                        self._wake(str(message["channel"]).split(":")[2], str(message["data"]))
                    elif kind == "message" and (notice := self.channels.get(str(message["channel"]))) is not None:
                        notice(str(message["data"]))
            except (RedisError, OSError) as exc:
                self._subscribed.clear()
                self.on_listening(False)
                log.warning("run waits: Redis subscription lost (%s); again in %.0fs", exc, RECONNECT_SECONDS)
                await asyncio.sleep(RECONNECT_SECONDS)
            finally:
                try:
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
                except (RedisError, OSError):
                    pass  # closing a dead connection: nothing to save

    def _wake(self, run_id: str, message: str) -> None:
        for waiter in self._waiting.get(run_id, ()):
            waiter.message = message
            waiter.woken.set()

    def _wake_all(self) -> None:
        for waiters in self._waiting.values():
            for waiter in waiters:
                waiter.message = None  # no message: read the record
                waiter.woken.set()


class Watch:
    """One waiting request's wake-ups: the message that woke it (None: read the record again)."""

    __slots__ = ("run_id", "woken", "message", "complete")

    def __init__(self, run_id: str, *, complete: bool) -> None:
        self.run_id = run_id
        self.woken = asyncio.Event()
        self.message: str | None = None
        self.complete = complete  # registered while subscribed: no message published since can miss it


class Ended:
    """Runs that just succeeded, as a waiter received them: the client that waited fetches the outputs next, and
    the output route then needs no read of the record (a succeeded run's outputs never change)."""

    def __init__(self, *, seconds: float = 60.0, size: int = 1000) -> None:
        self.seconds = seconds
        self.size = size
        self._runs: dict[str, tuple[Run, float]] = {}

    def put(self, run: Run) -> None:
        if run.status is not RunStatus.SUCCEEDED:
            return
        if len(self._runs) >= self.size:
            self._runs.pop(next(iter(self._runs)))  # the oldest: dicts keep insertion order
        self._runs[run.id] = (run, time.monotonic() + self.seconds)

    def get(self, run_id: str) -> Run | None:
        found = self._runs.get(run_id)
        return found[0] if found is not None and found[1] > time.monotonic() else None
