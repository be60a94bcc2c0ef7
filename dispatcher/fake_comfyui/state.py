"""The prompt queue and history, with ComfyUI 0.3.64's ``PromptQueue`` semantics, for one event loop.

Pending items live in a heap ordered by ``number`` (``front`` posts get negative numbers), so ``/queue``
lists them in heap order exactly as ComfyUI does. Every change calls ``on_change`` (which broadcasts a
``status`` frame), as ComfyUI's ``queue_updated`` does.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

MAXIMUM_HISTORY_SIZE = 10000


@dataclass
class QueueItem:
    """One queued prompt; on the wire it is ``[number, prompt_id, prompt, extra_data, outputs_to_execute]``."""

    number: int | float
    prompt_id: str
    prompt: dict[str, Any]
    extra_data: dict[str, Any]
    outputs: list[str]

    def wire(self) -> list[Any]:
        return [self.number, self.prompt_id, self.prompt, self.extra_data, self.outputs]


class PromptQueue:
    """Pending heap, the running item, and the history of finished prompts."""

    def __init__(self, on_change: Callable[[], None]) -> None:
        self._on_change = on_change
        # (number, prompt_id, tie-breaker, item): ComfyUI compares the tuples themselves; the counter
        # only avoids comparing dicts when a client reuses both number and prompt_id.
        self._heap: list[tuple[int | float, str, int, QueueItem]] = []
        self._seq = itertools.count()
        self._running: dict[int, QueueItem] = {}
        self._task_counter = 0
        self._wakeup = asyncio.Event()
        self.history: dict[str, dict[str, Any]] = {}

    def put(self, item: QueueItem) -> None:
        heapq.heappush(self._heap, (item.number, item.prompt_id, next(self._seq), item))
        self._on_change()
        self._wakeup.set()

    async def get(self) -> tuple[int, QueueItem]:
        """Wait for the next pending item and mark it running."""
        while not self._heap:
            self._wakeup.clear()
            await self._wakeup.wait()
        item = heapq.heappop(self._heap)[3]
        item_id = self._task_counter
        self._task_counter += 1
        self._running[item_id] = item
        self._on_change()
        return item_id, item

    def task_done(self, item_id: int, result: dict[str, Any], status: dict[str, Any]) -> None:
        """Store the finished prompt in history (``prompt``, ``outputs``, ``status``, then ``meta``)."""
        item = self._running.pop(item_id)
        if len(self.history) > MAXIMUM_HISTORY_SIZE:
            self.history.pop(next(iter(self.history)))
        entry: dict[str, Any] = {"prompt": item.wire(), "outputs": {}, "status": status}
        entry.update(result)
        self.history[item.prompt_id] = entry
        self._on_change()

    def remaining(self) -> int:
        return len(self._heap) + len(self._running)

    def is_running(self, item_id: int) -> bool:
        return item_id in self._running

    def running(self) -> list[QueueItem]:
        return list(self._running.values())

    def pending(self) -> list[QueueItem]:
        return [entry[3] for entry in self._heap]

    def wipe_queue(self) -> None:
        self._heap = []
        self._on_change()

    def delete_pending(self, prompt_id: str) -> bool:
        """Remove the first pending item with that id (running items are never touched)."""
        for index, entry in enumerate(self._heap):
            if entry[1] == prompt_id:
                if len(self._heap) == 1:
                    self.wipe_queue()
                else:
                    self._heap.pop(index)
                    heapq.heapify(self._heap)
                self._on_change()
                return True
        return False

    def get_history(
        self, prompt_id: str | None = None, max_items: int | None = None, offset: int = -1
    ) -> dict[str, Any]:
        if prompt_id is not None:
            entry = self.history.get(prompt_id)
            return {} if entry is None else {prompt_id: entry}
        out: dict[str, Any] = {}
        if offset < 0 and max_items is not None:
            offset = len(self.history) - max_items
        for index, (key, entry) in enumerate(self.history.items()):
            if index >= offset:
                out[key] = entry
                if max_items is not None and len(out) >= max_items:
                    break
        return out

    def wipe_history(self) -> None:
        self.history = {}

    def delete_history(self, prompt_id: str) -> None:
        self.history.pop(prompt_id, None)
