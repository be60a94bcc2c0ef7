"""Learning when the runs of a batch command end, with a few requests however many runs there are.

Each run belongs to the batch that created it (``run.batch_id``; a run found again by its idempotency
key keeps the batch of the process that made it). A round asks each batch with runs still followed
for its counts (``GET /v1/batches/{id}?limit=1``); only a batch whose counts moved since the last
round (or that was handed new runs) is read page by page, 1,000 runs a page. A run's end always
moves its batch's counts (ended counts only grow), so no end is missed. Runs without a batch, or
whose batch is gone, are read one by one.

No long polls: a tenant's waiting requests are capped, and a thousand of them would be refused.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import astuple, dataclass, field

from comfy_dispatch_client import Client, NotFound, Run

PAGE = 1000
"""Runs per page of a batch (the API's most)."""
LOOSE_PER_ROUND = 50
"""Runs without a batch read per round: the rest wait for the next rounds."""


@dataclass
class _Batch:
    members: set[str] = field(default_factory=set)
    seen: tuple[int, ...] | None = None
    dirty: bool = True
    eta: float | None = None


class Tracker:
    """The runs not ended yet, by the input line they came from; :meth:`poll` hands out those that ended."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self._lines: dict[str, int] = {}
        self._status: dict[str, str] = {}
        self._batches: dict[str, _Batch] = {}
        self._loose: list[str] = []

    def __len__(self) -> int:
        return len(self._lines)

    def add(self, line: int, run: Run) -> None:
        """Follow ``run`` (of input ``line``) until it ends; it must not have ended yet."""
        self._lines[run.id] = line
        self._status[run.id] = run.status.value
        if run.batch_id is None:
            self._loose.append(run.id)
            return
        batch = self._batches.setdefault(run.batch_id, _Batch())
        batch.members.add(run.id)
        batch.dirty = True  # its counts may not move again: read it whole once

    def counts(self) -> Counter[str]:
        """The runs followed, by their last status seen (queued, running)."""
        return Counter(self._status.values())

    def eta(self) -> float | None:
        """When the last run followed will likely have ended, in seconds from now, by the API's estimates."""
        known = [b.eta for b in self._batches.values() if b.eta is not None]
        return max(known) if known else None

    def poll(self) -> list[tuple[int, Run]]:
        """One round: the runs that have ended since the last, each with its input line; they are followed no more."""
        ended: list[tuple[int, Run]] = []
        for batch_id, batch in list(self._batches.items()):
            if not batch.members:
                del self._batches[batch_id]
                continue
            try:
                head = self._client.get_batch(batch_id, limit=1)
            except NotFound:  # expired, or from an API that keeps no batches: follow its runs one by one
                self._loose.extend(batch.members)
                del self._batches[batch_id]
                continue
            batch.eta = head.eta_seconds
            counts = astuple(head.counts)
            if counts == batch.seen and not batch.dirty:
                continue
            batch.seen, batch.dirty = counts, False
            for run in self._client.batch_runs(batch_id, page_size=PAGE):
                if run.id in batch.members:
                    self._see(run, ended, batch)
            if head.done and batch.members:  # not among the batch's runs after all: read them one by one
                self._loose.extend(batch.members)
                del self._batches[batch_id]
        loose, self._loose = self._loose[:LOOSE_PER_ROUND], self._loose[LOOSE_PER_ROUND:]
        for run_id in loose:
            run = self._client.get(run_id)
            if not self._see(run, ended, None):
                self._loose.append(run_id)
        return ended

    def _see(self, run: Run, ended: list[tuple[int, Run]], batch: _Batch | None) -> bool:
        """Record ``run`` as read now; True once it has ended (then it is in ``ended``, no longer followed)."""
        if not run.ended:
            self._status[run.id] = run.status.value
            return False
        ended.append((self._lines.pop(run.id), run))
        del self._status[run.id]
        if batch is not None:
            batch.members.discard(run.id)
        return True
