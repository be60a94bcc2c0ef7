"""Submitting many runs through ``POST /v1/runs/batch``, as a plan the clients drive (no I/O here).

Every item carries an idempotency key (the caller's, else a new uuid4), so sending a chunk again
(a retry, a process started again) makes no second run. The plan hands out chunks of at most
1000 items, in order, and takes each answer back:

* items refused for rate (429) go back to be sent again after the ``retry_after`` their problems
  name; the next chunk is sized from what the API just accepted (twice as many, at least
  :data:`MIN_WINDOW`), so a tenant at its rate is not sent a thousand items a second to refuse;
* a chunk refused whole as too large (413) is split in two, and later chunks are smaller;
* other refusals (422, 404, 409) are final: the item's ``error`` says why.

Rounds in a row where the API accepted nothing are counted; past the retry policy's attempts the
items still refused for rate are given up (each keeps its 429 problem).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from comfy_dispatch_client.calls import new_idempotency_key, run_body
from comfy_dispatch_client.errors import ApiError, ProtocolError, RateLimited
from comfy_dispatch_client.models import BatchItem, BatchSubmission
from comfy_dispatch_client.retrying import RetryPolicy, backoff

MAX_CHUNK = 1000
"""The most items the API takes in one batch request."""
MIN_WINDOW = 16
DEFAULT_RETRY_AFTER = 1.0
KNOWN_FIELDS = ("workflow", "params", "priority", "idempotency_key")


@dataclass(frozen=True)
class RunRequest:
    """One run to submit: a workflow, its parameters, and the options of a native submission
    (``cache``, ``callback_urls``, ``timeout_seconds``)."""

    workflow: str
    params: Mapping[str, Any] = field(default_factory=dict)
    priority: str | None = None
    idempotency_key: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, item: RunRequest | Mapping[str, Any]) -> RunRequest:
        """A RunRequest, or one from a mapping shaped like a batch item (``{"workflow", "params", ...}``)."""
        if isinstance(item, RunRequest):
            return item
        workflow = item.get("workflow")
        if not isinstance(workflow, str) or not workflow:
            raise ValueError(f"a run needs a workflow name, got {workflow!r}")
        params = item.get("params") or {}
        if not isinstance(params, Mapping):
            raise ValueError(f"params must be an object, got {type(params).__name__}")
        key = item.get("idempotency_key")
        priority = item.get("priority")
        return cls(
            workflow=workflow,
            params=params,
            priority=None if priority is None else str(priority),
            idempotency_key=None if key is None else str(key),
            options={k: v for k, v in item.items() if k not in KNOWN_FIELDS},
        )

    def to_item(self, key: str) -> dict[str, Any]:
        """This run as an item of a batch request, with ``key`` as its idempotency key."""
        return {"workflow": self.workflow, **run_body(self.params, self.priority, self.options), "idempotency_key": key}


@dataclass
class Chunk:
    """Items of one batch request: their places in the whole submission and their JSON."""

    indices: list[int]
    items: list[dict[str, Any]]
    delay: float = 0.0
    """Seconds to wait before sending it (items refused for rate before)."""


class BatchPlan:
    """What is left to send of one ``submit_many``, and the answers so far."""

    def __init__(
        self, requests: Iterable[RunRequest | Mapping[str, Any]], *, chunk_size: int = MAX_CHUNK, policy: RetryPolicy
    ) -> None:
        if not 1 <= chunk_size <= MAX_CHUNK:
            raise ValueError(f"chunk_size must be in 1..{MAX_CHUNK}")
        runs = [RunRequest.of(item) for item in requests]
        self.keys = [run.idempotency_key or new_idempotency_key() for run in runs]
        self._items = [run.to_item(key) for run, key in zip(runs, self.keys, strict=True)]
        self._pending: deque[int] = deque(range(len(runs)))
        self._answers: dict[int, BatchItem] = {}
        self._size = chunk_size
        self._window = chunk_size
        self._delay = 0.0
        self._stalls = 0
        self._policy = policy
        self.batch_ids: list[str] = []

    def next_chunk(self) -> Chunk | None:
        """The next request to send, or None when every item has its answer."""
        if not self._pending:
            return None
        count = min(self._size, self._window, len(self._pending))
        indices = [self._pending.popleft() for _ in range(count)]
        delay, self._delay = self._delay, 0.0
        return Chunk(indices, [self._items[i] for i in indices], delay)

    def take_answer(self, chunk: Chunk, answer: Any) -> None:
        """Record the API's answer to ``chunk``: accepted and refused items, and what to send again."""
        if not isinstance(answer, Mapping) or not isinstance(answer.get("items"), list):
            raise ProtocolError("the batch answer has no items list")
        batch_id = answer.get("batch_id")
        if isinstance(batch_id, str) and batch_id not in self.batch_ids:
            self.batch_ids.append(batch_id)
        got: dict[int, BatchItem] = {}
        for raw in answer["items"]:
            position = raw.get("index") if isinstance(raw, Mapping) else None
            if not isinstance(position, int) or not 0 <= position < len(chunk.indices):
                raise ProtocolError(f"the batch answer has an item with index {position!r}")
            index = chunk.indices[position]
            got[index] = BatchItem.from_json(raw, key=self.keys[index], index=index)
        if len(got) != len(chunk.indices):
            raise ProtocolError(f"the batch answer has {len(got)} items for {len(chunk.indices)} sent")
        # Every item gets this answer now; one sent again for rate gets its next answer then.
        self._answers.update(got)
        again = [i for i in chunk.indices if got[i].status == 429]
        if not again:
            self._window = self._size
            return
        accepted = sum(1 for item in got.values() if item.accepted)
        self._stalls = 0 if accepted else self._stalls + 1
        if self._stalls >= self._policy.attempts:
            return  # the API accepts nothing, round after round: the 429s stand
        self._pending.extendleft(reversed(again))
        self._window = max(MIN_WINDOW, 2 * accepted)
        after = max(_retry_after(got[i].error) for i in again)
        self._delay = backoff(self._policy, self._stalls + 1, after)

    def too_large(self, chunk: Chunk, error: ApiError) -> None:
        """The API refused ``chunk`` whole as too large (413): send it in halves, and later chunks smaller."""
        if len(chunk.indices) == 1:
            index = chunk.indices[0]
            self._answers[index] = BatchItem(index, error.status, self.keys[index], error=error)
            return
        half = len(chunk.indices) // 2
        self._size = max(1, half)
        self._pending.extendleft(reversed(chunk.indices))

    def result(self) -> BatchSubmission:
        return BatchSubmission(
            batch_ids=list(self.batch_ids), items=[self._answers[i] for i in range(len(self._items))]
        )


def _retry_after(error: ApiError | None) -> float:
    if isinstance(error, RateLimited) and error.retry_after is not None:
        return error.retry_after
    return DEFAULT_RETRY_AFTER
