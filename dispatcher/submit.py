"""Accepting a run: bind its parameters, then store it in its tenant's backlog, all or nothing.

The scheduler (``dispatcher.scheduler``) later hands it to RQ; nothing here
talks to RQ. One Lua script checks the tenant's ``max_queued`` and writes the
record, the graph, the backlog entry and the round-robin membership, so two
API processes can never both squeeze past a full queue.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from redis import Redis

from dispatcher import keys
from dispatcher.binding import bind
from dispatcher.errors import ParameterError, QueueFull
from dispatcher.events import LUA_EMIT
from dispatcher.registry import Registry
from dispatcher.runs import PRIORITIES, Priority, Run, new_run, new_run_id
from dispatcher.settings import Settings
from dispatcher.tenants import DEFAULT_TENANT

log = logging.getLogger(__name__)

MAX_RUN_TIMEOUT = 7 * 86400.0

_SUBMIT = (
    LUA_EMIT
    + """
-- KEYS: run, graph, backlog(tenant, priority), rotation(priority), recent, tenant, backlog x3 (all priorities)
-- ARGV: run_id, tenant, score, graph, max_queued_default, recent_max, wake_channel, event, field, value, ...
local max_queued = tonumber(redis.call('HGET', KEYS[6], 'max_queued') or ARGV[5])
if max_queued > 0 then
  local queued = redis.call('ZCARD', KEYS[7]) + redis.call('ZCARD', KEYS[8]) + redis.call('ZCARD', KEYS[9])
  if queued >= max_queued then return {0, max_queued} end
end
for i = 9, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('SET', KEYS[2], ARGV[4])
if redis.call('ZCARD', KEYS[3]) == 0 then
  redis.call('LREM', KEYS[4], 0, ARGV[2])
  redis.call('RPUSH', KEYS[4], ARGV[2])
end
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
redis.call('LPUSH', KEYS[5], ARGV[1])
redis.call('LTRIM', KEYS[5], 0, tonumber(ARGV[6]) - 1)
emit(ARGV[1], 'queued', ARGV[8])
redis.call('PUBLISH', ARGV[7], 'submit')
return {1, max_queued}
"""
)


def parse_priority(value: Any) -> Priority:
    if value is None:
        return Priority.NORMAL
    try:
        return Priority(value)
    except ValueError:
        raise ParameterError("priority", "must be one of: high, normal, low") from None


def parse_timeout(value: Any, default: float) -> float:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= MAX_RUN_TIMEOUT:
        raise ParameterError("timeout_seconds", f"must be a number of seconds in (0, {MAX_RUN_TIMEOUT:g}]")
    return float(value)


CALLBACK_KEYS = ("on_result_url", "on_progress_event_url")


def parse_callbacks(value: Any) -> dict[str, str] | None:
    """Comflowy's ``callback_urls``: an object with ``on_result_url`` and/or ``on_progress_event_url``."""
    if value is None:
        return None
    if not isinstance(value, dict) or not value or set(value) - set(CALLBACK_KEYS):
        raise ParameterError("callback_urls", f"must be an object with {' and/or '.join(CALLBACK_KEYS)}")
    for name, url in value.items():
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ParameterError(f"callback_urls.{name}", "must be an http:// or https:// URL")
    return dict(value)


class Submitter:
    """Stores accepted runs; one per process (the script is registered once)."""

    def __init__(self, redis: Redis, registry: Registry, settings: Settings) -> None:
        self.redis = redis
        self.registry = registry
        self.settings = settings
        self._script = redis.register_script(_SUBMIT)

    def submit(self, workflow_id: str, body: Mapping[str, Any], *, tenant: str = DEFAULT_TENANT) -> Run:
        """Validate and bind ``body`` for ``workflow_id``, then queue the run for ``tenant``.

        Raises WorkflowNotFound or ParameterError before anything is written, QueueFull if the
        tenant already has its ``max_queued`` runs queued (nothing written then either).
        """
        workflow = self.registry.get(workflow_id)
        priority = parse_priority(body.get("priority"))
        timeout = parse_timeout(
            body.get("timeout_seconds"), float(workflow.timeout_seconds or self.settings.run_timeout)
        )
        callbacks = parse_callbacks(body.get("callback_urls"))
        run_id = new_run_id()
        bound = bind(workflow, body, run_id=run_id)
        run = new_run(
            workflow.id,
            bound.params | ({"overrides": bound.overrides} if bound.overrides else {}),
            priority=priority,
            max_attempts=workflow.max_attempts or self.settings.max_attempts,
            timeout=timeout,
            tenant=tenant,
            run_id=run_id,
        )
        run.callbacks = callbacks
        flat: list[str] = []
        for name, value in run.to_redis().items():
            flat += [name, value]
        ok, limit = self._script(
            keys=[
                keys.run(run.id),
                keys.run_graph(run.id),
                keys.backlog(tenant, run.priority),
                keys.rotation(run.priority),
                keys.RECENT_RUNS,
                keys.tenant(tenant),
                *(keys.backlog(tenant, p) for p in PRIORITIES),
            ],
            args=[
                run.id,
                tenant,
                repr(run.created_at),
                json.dumps(bound.graph),
                self.settings.max_queued,
                keys.RECENT_RUNS_MAX,
                keys.SCHEDULER_WAKE,
                json.dumps({"workflow": run.workflow, "priority": run.priority, "tenant": tenant}),
                *flat,
            ],
        )
        if not int(ok):
            raise QueueFull(tenant, int(limit))
        log.info("accepted run %s of %s for %s (priority %s)", run.id, workflow.id, tenant, run.priority)
        return run
