"""The runs a worker holds at once, up to its pipeline depth.

ComfyUI executes one prompt at a time, from its own queue. A worker holding more than one run keeps that
queue non-empty: while one run executes, the next is posted already and starts the instant the first one
ends, and the first one's outputs are fetched and stored while the next runs. Each held run keeps its
own lease, fencing and dispatch number; the pipeline only counts them, so the RQ loop pops a job only
while a slot is free (``COMFY_DISPATCH_PIPELINE_DEPTH``; 1 is one run at a time).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from dispatcher.lease import Lease

log = logging.getLogger(__name__)


@dataclass
class Held:
    """One run a worker holds: claimed, posted or executing on its ComfyUI, or being stored and ended."""

    lease: Lease
    prompt_id: str
    canceled: threading.Event = field(default_factory=threading.Event)  # a cancel came for it
    lost: threading.Event = field(default_factory=threading.Event)  # its lease was refused: stop, write nothing
    release: threading.Event = field(default_factory=threading.Event)  # the worker stops: give it back if not started
    # A newer attempt of the run is held here now (this one's lease lapsed): it follows the same prompt, so
    # this one leaves without stopping it.
    superseded: threading.Event = field(default_factory=threading.Event)
    executing: bool = False  # ComfyUI has started it (execution_start)
    posted: bool = False  # its prompt is in ComfyUI's queue (or was found there): the next one may be posted

    @property
    def run_id(self) -> str:
        return self.lease.run_id


# A cancel for a run not held (yet) is remembered this long: it may come between the claim and the hold.
CANCEL_MEMORY_SECONDS = 60.0


class Pipeline:
    """The held runs, in the order they were taken; thread-safe."""

    def __init__(self, depth: int) -> None:
        self.depth = depth
        self._held: dict[str, Held] = {}
        self._changed = threading.Condition()
        self._canceled: dict[str, float] = {}  # run id -> monotonic time a cancel came while it was not held
        self.added = 0  # runs held so far: whether one came since a moment (see worker.runner's idle tell)

    def __len__(self) -> int:
        return len(self._held)

    @property
    def free(self) -> int:
        return max(0, self.depth - len(self._held))

    def add(self, held: Held) -> None:
        """Hold a run just claimed. An older attempt of it still held here is superseded; a cancel that came
        since the claim read the record applies to it."""
        with self._changed:
            older = self._held.pop(held.run_id, None)
            if older is not None:
                older.superseded.set()
                older.lost.set()
            if self._canceled.pop(held.run_id, None) is not None:
                held.canceled.set()
            self._held[held.run_id] = held
            self.added += 1
            self._changed.notify_all()

    def discard(self, held: Held) -> None:
        """``held`` leaves the pipeline (not a newer attempt of its run that took its place)."""
        with self._changed:
            if self._held.get(held.run_id) is held:
                del self._held[held.run_id]
            self._changed.notify_all()

    def cancel(self, run_id: str) -> Held | None:
        """Mark ``run_id`` canceled: its held run (returned), or the one it will be if claimed just now."""
        with self._changed:
            held = self._held.get(run_id)
            if held is not None:
                held.canceled.set()
                return held
            now = time.monotonic()
            self._canceled = {r: at for r, at in self._canceled.items() if now - at < CANCEL_MEMORY_SECONDS}
            self._canceled[run_id] = now
            return None

    def posted(self, held: Held) -> None:
        """``held``'s prompt is in ComfyUI's queue: the run held after it may post its own."""
        with self._changed:
            held.posted = True
            self._changed.notify_all()

    def wait_turn(self, held: Held, timeout: float) -> bool:
        """Block until every run held before ``held`` has posted its prompt or left (True), or ``timeout``
        seconds passed (False). Runs are posted in the order they were taken, as RQ handed them out in
        priority order: threads racing to post could put a later run first in ComfyUI's queue."""

        def turn() -> bool:
            if self._held.get(held.run_id) is not held:
                return True  # not held (superseded): nothing to wait for
            for other in self._held.values():
                if other is held:
                    return True
                if not other.posted:
                    return False
            return True

        with self._changed:
            return self._changed.wait_for(turn, timeout)

    def get(self, run_id: str) -> Held | None:
        return self._held.get(run_id)

    def runs(self) -> list[Held]:
        with self._changed:
            return list(self._held.values())

    def current(self) -> Held | None:
        """The run ComfyUI executes now, else the first one held."""
        held = self.runs()
        return next((h for h in held if h.executing), held[0] if held else None)

    def wait_for_room(self, timeout: float) -> bool:
        """Block until a slot is free (True) or ``timeout`` seconds passed (False)."""
        with self._changed:
            return self._changed.wait_for(lambda: len(self._held) < self.depth, timeout)

    def wait_empty(self, timeout: float) -> bool:
        """Block until no run is held (True) or ``timeout`` seconds passed (False)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            return self._changed.wait_for(lambda: not self._held, max(0.0, deadline - time.monotonic()))


class Runners:
    """The threads that execute held runs, one per slot, started once (a thread per run costs more).

    Daemon threads: a worker told to stop twice (a cold shutdown) exits without waiting on them, and the
    reaper retries what they held.
    """

    def __init__(self, count: int) -> None:
        self._work: queue.SimpleQueue[Callable[[], object] | None] = queue.SimpleQueue()
        self._threads = [threading.Thread(target=self._loop, name=f"run-{i}", daemon=True) for i in range(count)]
        for thread in self._threads:
            thread.start()

    def submit(self, work: Callable[[], object]) -> None:
        self._work.put(work)

    def shutdown(self) -> None:
        for _ in self._threads:
            self._work.put(None)

    def _loop(self) -> None:
        while (work := self._work.get()) is not None:
            try:
                work()
            except Exception:  # loop boundary: the thread must outlive a bug in one run
                log.exception("a run's thread failed")
