"""Accepting a run: bind its parameters, store its record and enqueue its job, all or nothing."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from redis import Redis
from rq import Queue

from dispatcher import keys
from dispatcher.binding import bind
from dispatcher.errors import ParameterError
from dispatcher.registry import Registry
from dispatcher.runs import Priority, Run, new_run, new_run_id
from dispatcher.settings import Settings

log = logging.getLogger(__name__)

JOB_FUNC = "worker.runner.execute_run"
# RQ's own bookkeeping of a finished job is useless to us (the run record is the truth): drop it fast.
JOB_RESULT_TTL = 0
JOB_FAILURE_TTL = 3600


def parse_priority(value: Any) -> Priority:
    if value is None:
        return Priority.NORMAL
    try:
        return Priority(value)
    except ValueError:
        raise ParameterError("priority", "must be one of: high, normal, low") from None


def enqueue_data(queue: Queue, run: Run) -> Any:
    """The RQ job of one attempt of ``run`` (its id is fresh: RQ jobs are disposable)."""
    return queue.prepare_data(
        JOB_FUNC,
        args=(run.id,),
        timeout=int(run.timeout) + 120,  # our own timeout fires first and interrupts ComfyUI
        result_ttl=JOB_RESULT_TTL,
        failure_ttl=JOB_FAILURE_TTL,
        description=f"run {run.id} ({run.workflow})",
    )


def submit_run(
    raw: Redis, queue: Queue, registry: Registry, settings: Settings, workflow_id: str, body: Mapping[str, Any]
) -> Run:
    """Validate and bind ``body`` for ``workflow_id``, then store and enqueue the run atomically.

    Raises WorkflowNotFound or ParameterError before anything is written.
    """
    workflow = registry.get(workflow_id)
    priority = parse_priority(body.get("priority"))
    run_id = new_run_id()
    bound = bind(workflow, body, run_id=run_id)
    run = new_run(
        workflow.id,
        bound.params | ({"overrides": bound.overrides} if bound.overrides else {}),
        priority=priority,
        max_attempts=workflow.max_attempts or settings.max_attempts,
        timeout=float(workflow.timeout_seconds or settings.run_timeout),
        run_id=run_id,
    )
    # One MULTI: record, graph, queued-set entry, recent list and RQ job land together or not at all.
    with raw.pipeline(transaction=True) as pipe:
        pipe.hset(keys.run(run.id), mapping=run.to_redis())  # type: ignore[arg-type]
        pipe.set(keys.run_graph(run.id), json.dumps(bound.graph))
        pipe.zadd(keys.queued(run.priority), {run.id: run.created_at})
        pipe.lpush(keys.RECENT_RUNS, run.id)
        pipe.ltrim(keys.RECENT_RUNS, 0, keys.RECENT_RUNS_MAX - 1)
        queue.enqueue_many([enqueue_data(queue, run)], pipeline=pipe)
        pipe.execute()
    log.info("accepted run %s of %s (priority %s)", run.id, workflow.id, run.priority)
    return run
