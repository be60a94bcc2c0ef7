"""A run's RQ job written as RQ itself writes it, without RQ building the job for every run.

The submit script enqueues a run's first job in the step that stores the run (``dispatcher.submit``), so the API
makes RQ's writes for that job on every submission, while its client waits. RQ's enqueue builds a Job (a dozen
checked fields), serializes it and records its commands: the largest share of a submission's own CPU (a third of
a millisecond in place). RQ's writes for two runs of one time limit differ only in the job's id and key, its
description, its data (the function's arguments, pickled and compressed) and its timestamps. :class:`JobWrites`
has RQ write a stand-in run's job once per time limit, and fills those in for each run. It checks itself first:
a second stand-in's writes made that way must equal RQ's own, with its timestamps in RQ's format, or RQ's own
enqueue is used for every run of that time limit (as it is for time limits past the first few).
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable
from typing import Any

from rq import Queue
from rq.utils import now, utcformat, utcparse

log = logging.getLogger(__name__)

Writes = list[list[Any]]
# Two stand-in runs (their writes are never sent): ids of a run's shape, 32 hex digits.
STAND_INS = (("0" * 32, 1), ("1" * 32, 2))
TIMES = frozenset({"created_at", "enqueued_at"})
# Time limits learnt at most: each costs two of RQ's enqueues and a template kept; runs of others (a run may set
# its own) are written by RQ's enqueue.
MAX_TEMPLATES = 32


class JobWrites:
    """RQ's writes of a run's job on ``queue``: ``enqueue`` (RQ's own, for a run id, dispatch and time limit) is
    called for the stand-ins only, as long as the template it gives checks out."""

    def __init__(
        self,
        queue: Queue,
        func: str,
        describe: Callable[[str, int], str],
        job_id: Callable[[str, int], str],
        enqueue: Callable[[str, int, int], Writes],
    ) -> None:
        self.queue = queue
        self.func = func
        self.describe = describe
        self.job_id = job_id
        self.enqueue = enqueue
        self._recipes: dict[int, _Recipe | None] = {}

    def __call__(self, run_id: str, dispatch: int, timeout: int) -> Writes:
        recipe = self._recipes.get(timeout)
        if recipe is None and timeout not in self._recipes and len(self._recipes) < MAX_TEMPLATES:
            # Two threads may learn one at once: the same recipe either way.
            recipe = self._recipes[timeout] = self._learn(timeout)
        if recipe is None:
            return self.enqueue(run_id, dispatch, timeout)
        return recipe.make(self._values(run_id, dispatch, utcformat(now())))

    def _values(self, run_id: str, dispatch: int, moment: str) -> dict[str, Any]:
        job = self.job_id(run_id, dispatch)
        data = zlib.compress(self.queue.serializer.dumps((self.func, None, (run_id, dispatch), {})))
        return {
            "id": job,
            "key": self.queue.job_class.key_for(job),
            "description": self.describe(run_id, dispatch),
            "data": data,
            "time": moment,
        }

    def _learn(self, timeout: int) -> _Recipe | None:
        (first, first_dispatch), (second, second_dispatch) = STAND_INS
        try:
            template = self.enqueue(first, first_dispatch, timeout)
            recipe = _Recipe.of(template, self._values(first, first_dispatch, ""))
            expected = self.enqueue(second, second_dispatch, timeout)
            made = recipe.make(self._values(second, second_dispatch, ""))
            times = [expected[c][a] for c, a, kind in recipe.places if kind == "time"]
            same = _masked(made, recipe) == _masked(expected, recipe) and all(_rq_time(t) for t in times)
        except Exception:  # whatever RQ wrote, a submission must not fail for the template: RQ's own enqueue then
            log.exception("RQ's writes of a job could not be learnt; RQ's own enqueue makes every run's (slower)")
            return None
        if not same:
            log.warning("RQ's writes of a job are not as expected; RQ's own enqueue makes every run's (slower)")
            return None
        return recipe


class _Recipe:
    """A stand-in's writes, and where in them each value of a run goes."""

    def __init__(self, template: Writes, places: list[tuple[int, int, str]]) -> None:
        self.template = template
        self.places = places

    @classmethod
    def of(cls, template: Writes, values: dict[str, Any]) -> _Recipe:
        by_value = {repr(v): kind for kind, v in values.items() if kind != "time"}
        places = []
        for c, command in enumerate(template):
            for a, arg in enumerate(command):
                # HSET key field value ...: a time is the value after its field's name
                if command[0] == "HSET" and a >= 2 and a % 2 == 0 and a + 1 < len(command) and arg in TIMES:
                    places.append((c, a + 1, "time"))
                elif (kind := by_value.get(repr(arg))) is not None:
                    places.append((c, a, kind))
        return cls(template, places)

    def make(self, values: dict[str, Any]) -> Writes:
        writes = [list(command) for command in self.template]
        for c, a, kind in self.places:
            writes[c][a] = values[kind]
        return writes


def _rq_time(value: Any) -> bool:
    """Whether ``value`` is a timestamp as RQ writes them now (the template writes its own that way)."""
    return isinstance(value, str) and utcformat(utcparse(value)) == value


def _masked(writes: Writes, recipe: _Recipe) -> Writes:
    masked = [list(command) for command in writes]
    for c, a, kind in recipe.places:
        if kind == "time" and c < len(masked) and a < len(masked[c]):
            masked[c][a] = None
    return masked
