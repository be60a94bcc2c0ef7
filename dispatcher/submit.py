"""Accepting a run: bind its parameters, then store it in its tenant's backlog, all or nothing.

The scheduler (``dispatcher.scheduling.scheduler``) later hands it to RQ; nothing here
talks to RQ. One Lua script checks the tenant's ``max_queued`` and writes the
record, the graph, the backlog entry and the round-robin membership, so two
API processes can never both squeeze past a full queue.

The same script checks and keeps the request's idempotency key (``dispatcher.idempotency``) and
records a cacheable run for the result cache (``dispatcher.cache``); a cache hit is stored by the
cache's own script instead, which checks the idempotency key the same way.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from redis import Redis
from redis.asyncio import Redis as AsyncRedis
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

from dispatcher import keys
from dispatcher.addresses import AddressNotAllowed, AllowList, Resolver, check_url, system_resolver
from dispatcher.admission import KIND as ADMISSION_KIND
from dispatcher.admission import LUA_BUCKET, Admission, Admitted, Offer, parse_offer
from dispatcher.binding import Bound, bind
from dispatcher.cache import CachePlan, ResultCache, wants_cache
from dispatcher.errors import DispatchError, ParameterError, QueueFull, RunNotFound
from dispatcher.events import LUA_EMIT
from dispatcher.idempotency import CONFLICT, LUA_IDEMPOTENCY, REPLAYED, IdempotencyClaim
from dispatcher.listing import LUA_INDEX, index_horizon
from dispatcher.pipelining import send_as_made
from dispatcher.routing.capabilities import needs_of
from dispatcher.routing.lua import as_routes
from dispatcher.routing.store import FleetCapabilities
from dispatcher.runs import PRIORITIES, Priority, Run, RunStore, new_run, new_run_id, run_of
from dispatcher.scheduling.dispatch import LUA_TAKE, Dispatched, Taken, parse_taken
from dispatcher.settings import Settings
from dispatcher.tenants import DEFAULT_TENANT
from dispatcher.workflows import Registry, Workflow, parse_version
from dispatcher.workflows.store import Latest, entry_text

log = logging.getLogger(__name__)

MAX_RUN_TIMEOUT = 7 * 86400.0
RATE_LIMITED = 4  # the submit script's answer when its admission refused the run
STALE = 5  # its answer when the workflow has a version this process has not read
NO_ADMISSION = ["", "", "", ""]
PIPELINE_CHUNK = 50  # runs accept_many sends to Redis at a time

_SUBMIT = (
    LUA_BUCKET
    + LUA_EMIT
    + LUA_INDEX
    + LUA_IDEMPOTENCY
    + LUA_TAKE
    + """
-- KEYS: run, graph, backlog(tenant, priority), rotation(priority), recent, tenant, backlog x3 (all priorities),
--       idempotency, cache pointer, INFLIGHT, DELAYED, the API key's bucket, the workflow index
-- ARGV: run_id, tenant, score, graph, max_queued_default, recent_max, wake_channel ('': none), event,
--       idempotency fingerprint, idempotency ttl, pointer ttl (0: do not record),
--       routes of the ready workers ('': take nothing; dispatcher.routing.lua), default dispatch rate,
--       default max running, index horizon (seconds), RQ queue name, k, the admission's 4, the workflow check's 2
--       (both below), then k items:
--       the RQ writes that
--       enqueue this run's first job on the queue named ([n, command, args...] each), then field, value, ...
-- Stored, it answers {1, max_queued}; with slots, a dispatch pass follows in the same step (the same take as
-- the scheduler's) and the answer adds what it took and its wait: {1, max_queued, taken, wait, handed}.
-- When the pass took this very run (its first dispatch), its RQ job is written here too (handed = 1).
-- With ARGV[18] (not ''), the run is first offered to the API key's bucket KEYS[14] (ARGV[18..21]: rate, burst,
-- ttl windows, epsilon; the tenant's own limits in KEYS[6] win): denied, it answers {4, ''} and stores nothing;
-- admitted, every answer ends with bucket_offer's (dispatcher.admission), for the RateLimit fields.
-- With ARGV[23] (not ''): the workflow's index entry (KEYS[15], field ARGV[22]) the run was bound with, as
-- this process last read it. A version published (or retired) since answers {5, ''}: nothing done, not even
-- the admission; the caller reads the workflow again and binds the run anew.
-- A replayed key answers before the queue limit: the first run was accepted, whatever the queue holds now.
local base = 24
if ARGV[23] ~= '' and redis.call('HGET', KEYS[15], ARGV[22]) ~= ARGV[23] then return {5, ''} end
local admitted = nil
local function answer(reply)
  if admitted then reply[#reply + 1] = admitted end
  return reply
end
if ARGV[18] ~= '' then
  admitted = bucket_offer(KEYS[14], KEYS[6], ARGV[18], ARGV[19], 1, ARGV[20], ARGV[21], '0')
  if admitted[1] == 0 then return answer({4, ''}) end
end
local seen = idem_seen(KEYS[10], ARGV[9])
if seen then return answer(seen) end
local max_queued = tonumber(redis.call('HGET', KEYS[6], 'max_queued') or ARGV[5])
if max_queued > 0 then
  local queued = redis.call('ZCARD', KEYS[7]) + redis.call('ZCARD', KEYS[8]) + redis.call('ZCARD', KEYS[9])
  if queued >= max_queued then return answer({0, max_queued}) end
end
local writes = tonumber(ARGV[17])
redis.call('HSET', KEYS[1], unpack(ARGV, base + writes, #ARGV))
redis.call('SET', KEYS[2], ARGV[4])
index_run(ARGV[1], ARGV[2], ARGV[3], ARGV[15])
batch_join(KEYS[1], ARGV[1])
if redis.call('ZCARD', KEYS[3]) == 0 then
  redis.call('LREM', KEYS[4], 0, ARGV[2])
  redis.call('RPUSH', KEYS[4], ARGV[2])
end
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
redis.call('LPUSH', KEYS[5], ARGV[1])
redis.call('LTRIM', KEYS[5], 0, tonumber(ARGV[6]) - 1)
emit(ARGV[1], 'queued', ARGV[8])
idem_keep(KEYS[10], ARGV[9], ARGV[1], ARGV[10])
if ARGV[11] ~= '0' then redis.call('SET', KEYS[11], ARGV[1], 'EX', ARGV[11]) end
if ARGV[7] ~= '' then redis.call('PUBLISH', ARGV[7], 'submit') end
if ARGV[12] ~= '' then
  local taken, wait, waiting = take(KEYS[12], KEYS[13], ARGV[12], ARGV[13], ARGV[14])
  local handed = 0
  for i = 1, #taken, 6 do
    if writes > 0 and taken[i] == ARGV[1] and taken[i + 1] == '1' then
      -- the writes name the shared queue: a run routed to a capability set goes to that set's queue
      local queue, key = ARGV[16], 'rq:queue:' .. ARGV[16]
      local routed = queue
      if taken[i + 4] ~= '-' then routed = queue .. ':caps:' .. taken[i + 4] end
      local j = base
      while j < base + writes do
        local n = tonumber(ARGV[j])
        local command = {unpack(ARGV, j + 1, j + n)}
        for c = 2, #command do
          if command[c] == queue then
            command[c] = routed
          elseif command[c] == key then
            command[c] = 'rq:queue:' .. routed
          end
        end
        redis.call(unpack(command))
        j = j + n + 1
      end
      handed = 1
    end
  end
  return answer({1, max_queued, taken, tostring(wait), handed, waiting})
end
return answer({1, max_queued})
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


def parse_callbacks(
    value: Any, allow: AllowList | None = None, *, resolve: Resolver = system_resolver
) -> dict[str, str] | None:
    """Comflowy's ``callback_urls``: an object with ``on_result_url`` and/or ``on_progress_event_url``.

    With ``allow``, each URL's host is resolved now and a URL reaching a refused address (loopback,
    private... unless allowed) is a ParameterError before anything is queued. A host that does not
    resolve now is let through: the webhook sender checks every address again at each attempt, and
    a passing DNS failure should not turn a run away.
    """
    if value is None:
        return None
    if not isinstance(value, dict) or not value or set(value) - set(CALLBACK_KEYS):
        raise ParameterError("callback_urls", f"must be an object with {' and/or '.join(CALLBACK_KEYS)}")
    for name, url in value.items():
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ParameterError(f"callback_urls.{name}", "must be an http:// or https:// URL")
        if allow is not None:
            try:
                check_url(url, allow, resolve=_lenient(resolve))
            except _Unresolved:
                log.info("callback_urls.%s: %s does not resolve now; checked again when sending", name, url)
            except AddressNotAllowed as exc:
                raise ParameterError(f"callback_urls.{name}", str(exc)) from None
    return dict(value)


class _Unresolved(Exception):
    """A callback host that does not resolve at submit time (not an OSError: check_url lets it propagate)."""


def _lenient(resolve: Resolver) -> Resolver:
    def resolving(host: str, port: int) -> Sequence[str]:
        try:
            return resolve(host, port)
        except OSError as exc:
            raise _Unresolved(host) from exc

    return resolving


@dataclass(frozen=True)
class Submission:
    """What submitting gave: the run, and whether it is an earlier run its idempotency key named."""

    run: Run
    replayed: bool = False  # nothing was stored: the key had been used with the same request
    taken: Taken | None = None  # with ``take_routes``: what the dispatch pass that followed took (to enqueue)
    handed: bool = False  # the pass took this run, and its RQ job is on the queue already
    admitted: Admitted | None = None  # with an admission Offer: the bucket's decision (for the RateLimit fields)


class WorkflowStale(Exception):
    """A run bound to the version of a workflow this process knows, which is no longer the latest (or may not be):
    nothing written, nothing admitted. The caller reads the workflow again and starts over, under ``run_id``."""

    def __init__(self, run_id: str | None) -> None:
        super().__init__("the workflow has a version this process has not read")
        self.run_id = run_id


class AdmissionDenied(Exception):
    """An accept with an admission Offer found the API key over its rate: nothing stored. The caller says so (429)."""

    def __init__(self, admitted: Admitted) -> None:
        super().__init__("over the submission rate")
        self.admitted = admitted


class Submitter:
    """Stores accepted runs; one per process (the scripts are registered once).

    ``wake_scheduler``: each stored run wakes the scheduler; False for a caller that runs a dispatch pass
    itself right after (the API), and wakes the scheduler only if its pass left the run behind.
    """

    def __init__(
        self,
        redis: Redis,
        registry: Registry,
        settings: Settings,
        *,
        wake_scheduler: bool = True,
        fleet: FleetCapabilities | None = None,
    ) -> None:
        self.redis = redis
        self.fleet = fleet  # what the workers can run: each run records its needs, and is checked against them
        self.wake_channel = keys.SCHEDULER_WAKE if wake_scheduler else ""
        self.registry = registry
        self.settings = settings
        self.runs = RunStore(redis)
        cache_ttl = settings.cache_ttl
        self.idempotency_ttl = settings.idempotency_ttl
        self.cache = ResultCache(redis, self.runs, ttl=cache_ttl, run_ttl_seconds=settings.run_ttl_seconds)
        self._script = redis.register_script(_SUBMIT)
        self.admission = Admission(redis)
        self._aio_script: AsyncScript | None = None

    def submit(self, workflow_id: str, body: Mapping[str, Any], *, tenant: str = DEFAULT_TENANT) -> Run:
        """Validate and bind ``body`` for ``workflow_id``, then queue the run for ``tenant``.

        Raises WorkflowNotFound or ParameterError before anything is written, QueueFull if the
        tenant already has its ``max_queued`` runs queued (nothing written then either).
        """
        return self.accept(workflow_id, body, tenant=tenant).run

    def accept(
        self,
        workflow_id: str | Workflow,
        body: Mapping[str, Any],
        *,
        tenant: str = DEFAULT_TENANT,
        idempotency_key: str | None = None,
        take_routes: str | int | None = None,
        enqueue_writes: Callable[[Dispatched], list[list[Any]]] | None = None,
        admission: Offer | None = None,
        known: Latest | None = None,
        run_id: str | None = None,
    ) -> Submission:
        """As :meth:`submit`, with an optional idempotency key, and the result cache where the run asks for it.

        The key seen before with the same workflow and body gives the first run (``replayed``, nothing
        stored); with another, Conflict (409). A cache hit is stored already succeeded and never queued.
        ``take_routes`` (the ready workers' slots by route): a queued run is followed, in the same script, by a
        dispatch pass; the Submission's ``taken`` says what it took, for the caller to enqueue. With
        ``enqueue_writes`` (``Handout.enqueue_writes``), the script enqueues this run's job itself if it takes it.

        With ``admission``, the run is first offered to the API key's bucket, in the same script (one round trip
        for both): over the rate, AdmissionDenied and nothing stored. A run refused before the script (bad
        parameters...) or served from the cache is offered on its own first, so every submission counts and a
        key over its rate hears that before anything else.

        ``known``: ``workflow_id`` is a Workflow built without reading Redis (``Registry.cached``), and this the
        latest version it was read with. The script checks it is still the latest (no round trip of its own). If
        it is not, or the run is refused (it may fit the version this process has not read), or served from the
        cache: WorkflowStale, with nothing written or admitted; the caller starts again from a fresh read (its
        input images included), under the same run id. ``run_id``: an id drawn already, nothing stored under it.
        """
        if known is not None and not isinstance(workflow_id, Workflow):
            raise ValueError("known goes with a Workflow")
        try:
            new = self._prepare(workflow_id, body, tenant=tenant, idempotency_key=idempotency_key, run_id=run_id)
        except DispatchError:
            if known is not None and isinstance(workflow_id, Workflow) and not self.is_latest(workflow_id.id, known):
                raise WorkflowStale(run_id) from None
            if admission is not None:
                self.admit(admission, tenant)
            raise
        if new.plan.source is not None and known is not None:
            raise WorkflowStale(new.run.id)  # a cache hit (rare): served from a fresh read
        if new.plan.source is not None:
            admitted = self.admit(admission, tenant) if admission is not None else None
            served = self._outcome(new, *self.cache.serve(new.run, new.plan.source, new.bound.graph, new.claim))
            return dataclasses.replace(served, admitted=admitted)
        writes = []
        if take_routes is not None and enqueue_writes is not None:
            writes = enqueue_writes(Dispatched(new.run.id, 1, new.run.priority.value, new.run.timeout))
        reply = self._script(**self._store_call(new, take_routes, writes, admission, known))
        if int(reply[0]) == STALE:
            raise WorkflowStale(new.run.id)
        admitted = parse_offer(reply[-1]) if admission is not None else None
        if admitted is not None:
            reply = reply[:-1]
            if not admitted.decision.allowed:
                raise AdmissionDenied(admitted)
        code, value, taken, handed = _parse_stored(reply)
        return dataclasses.replace(self._outcome(new, code, value, taken=taken, handed=handed), admitted=admitted)

    def is_latest(self, workflow_id: str, known: Latest) -> bool:
        """Whether ``known`` is still the workflow's latest version (one read)."""
        return self.redis.hget(keys.WORKFLOWS, workflow_id) == entry_text(known)

    async def accept_async(
        self,
        aio: AsyncRedis,
        workflow: Workflow,
        known: Latest,
        body: Mapping[str, Any],
        *,
        tenant: str,
        admission: Offer,
        idempotency_key: str | None = None,
        take_routes: str | int | None = None,
        enqueue_writes: Callable[[Dispatched], list[list[Any]]] | None = None,
    ) -> Submission | str | None:
        """:meth:`accept` on an event loop (``aio``), for the common case, which needs no I/O but the script: a
        workflow this process has read (``known``, see ``Registry.cached``), no callback URLs (checked against
        DNS), no result cache, the fleet's view read already. Where :meth:`accept` must do it instead, nothing
        is written or admitted here, and the answer is None (a run refused before the script: it is offered to
        the bucket on its own there) or the id to give :meth:`accept` (a version this process had not read: the
        run is bound again, under the id it was drawn)."""
        try:
            if body.get("callback_urls") is not None or wants_cache(workflow, body):
                return None
            new = self._prepare(workflow, body, tenant=tenant, idempotency_key=idempotency_key)
        except DispatchError:
            return None
        writes = []
        if take_routes is not None and enqueue_writes is not None:
            writes = enqueue_writes(Dispatched(new.run.id, 1, new.run.priority.value, new.run.timeout))
        if self._aio_script is None:
            self._aio_script = aio.register_script(_SUBMIT)
        reply = await self._aio_script(**self._store_call(new, take_routes, writes, admission, known))
        if int(reply[0]) == STALE:
            return new.run.id
        admitted = parse_offer(reply[-1])
        if not admitted.decision.allowed:
            raise AdmissionDenied(admitted)
        code, value, taken, handed = _parse_stored(reply[:-1])
        if code == REPLAYED:
            first = run_of(await aio.hgetall(keys.run(value)))  # type: ignore[misc,arg-type]
            if first is None:  # expired between the script and this read: as good as never existing
                raise RunNotFound(value)
            return Submission(first, replayed=True, admitted=admitted)
        return dataclasses.replace(self._outcome(new, code, value, taken=taken, handed=handed), admitted=admitted)

    def admit(self, offer: Offer, tenant: str) -> Admitted:
        """Offer one submission to ``offer``'s bucket on its own; AdmissionDenied over the rate."""
        admitted = self.admission.check_tenant(offer.ident, tenant, rate=offer.rate, burst=offer.burst)
        if not admitted.decision.allowed:
            raise AdmissionDenied(admitted)
        return admitted

    def accept_many(
        self, items: Sequence[tuple[str | Workflow, Mapping[str, Any], str | None]], *, tenant: str, batch_id: str = ""
    ) -> list[Submission | DispatchError]:
        """Submit many runs for ``tenant`` (``(workflow id or Workflow, body, idempotency key)`` each), each on its
        own: its Submission, or the error that refused it (nothing stored for it), in order. Each run is stored by the
        submit script (atomic per run), on one connection, chunks sent while the next are bound; no dispatch
        pass follows each (the caller runs one for all). With ``batch_id`` (a batch opened already), the runs
        are counted in it."""
        results: list[Submission | DispatchError | None] = [None] * len(items)
        stored: list[tuple[int, _NewRun]] = []

        def chunks() -> Iterator[list[tuple[Any, ...]]]:
            # Made while Redis stores the chunk before (dispatcher.pipelining).
            chunk: list[tuple[Any, ...]] = []
            for index, (workflow_id, body, key) in enumerate(items):
                try:
                    new = self._prepare(workflow_id, body, tenant=tenant, idempotency_key=key, batch_id=batch_id)
                    if new.plan.source is not None:  # rare: served from the cache, on its own
                        served = self.cache.serve(new.run, new.plan.source, new.bound.graph, new.claim)
                        results[index] = self._outcome(new, *served)
                        continue
                except DispatchError as exc:
                    results[index] = exc
                    continue
                stored.append((index, new))
                call = self._store_call(new, None, [])
                chunk.append(("EVALSHA", self._script.sha, len(call["keys"]), *call["keys"], *call["args"]))
                if len(chunk) == PIPELINE_CHUNK:
                    yield chunk
                    chunk = []
            yield chunk

        self.redis.script_load(_SUBMIT)  # the chunks name it by its sha
        replies = send_as_made(self.redis, chunks())
        for (index, new), reply in zip(stored, replies, strict=True):
            if isinstance(reply, NoScriptError):  # Redis lost its scripts since (restarted): nothing ran, so again
                reply = self._script(**self._store_call(new, None, []))
            if isinstance(reply, Exception):
                raise reply
            code, value, _, _ = _parse_stored(reply)
            try:
                results[index] = self._outcome(new, code, value)
            except DispatchError as exc:
                results[index] = exc
        return [r for r in results if r is not None]

    def _prepare(
        self,
        workflow_id: str | Workflow,
        body: Mapping[str, Any],
        *,
        tenant: str,
        idempotency_key: str | None,
        batch_id: str = "",
        run_id: str | None = None,
    ) -> _NewRun:
        """Validate and bind a run (no write): WorkflowNotFound or ParameterError for what does not fit, and
        NoCapableWorker when no worker of the fleet has a node class or model file it needs."""
        if isinstance(workflow_id, Workflow):
            workflow = workflow_id
        else:
            workflow = self.registry.get(workflow_id, parse_version(body.get("version")))
        priority = parse_priority(body.get("priority"))
        timeout = parse_timeout(
            body.get("timeout_seconds"), float(workflow.timeout_seconds or self.settings.run_timeout)
        )
        callbacks = parse_callbacks(body.get("callback_urls"), AllowList.parse(self.settings.callback_allow))
        run_id = run_id or new_run_id()
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
        run.batch_id = batch_id
        run.workflow_version = workflow.version
        if self.fleet is not None:
            needs = needs_of(bound.graph, self.fleet.loaders())
            if self.settings.unservable_runs == "refuse":
                self.fleet.check(workflow.id, needs)
            run.needs, run.checkpoint = needs.to_text(), needs.checkpoint
        claim = IdempotencyClaim.build(
            idempotency_key,
            tenant=tenant,
            workflow_id=workflow.id,
            body=body,
            ttl=self.idempotency_ttl,
        )
        plan = self.cache.plan(workflow, body, bound, tenant=tenant, timeout=timeout)
        return _NewRun(run, bound, claim, plan)

    def _outcome(
        self, new: _NewRun, code: int, value: str, *, taken: Taken | None = None, handed: bool = False
    ) -> Submission:
        """What a store script's (code, value) mean for ``new``: its Submission, or the error that refused it."""
        run, tenant = new.run, new.run.tenant
        if code == REPLAYED:
            first = self.runs.get(value)
            if first is None:  # expired between the script and this read: as good as never existing
                raise RunNotFound(value)
            log.info("idempotency key of %s named run %s: replayed", tenant, first.id)
            return Submission(first, replayed=True)
        if code == CONFLICT:
            raise new.claim.conflict(value)
        if new.plan.source is not None:
            return Submission(self.runs.get(run.id) or run)
        if code == 0:
            raise QueueFull(tenant, int(value))
        log.info("accepted run %s of %s for %s (priority %s)", run.id, run.workflow, tenant, run.priority)
        return Submission(run, taken=taken, handed=handed)

    def _store_call(
        self,
        new: _NewRun,
        take_routes: str | int | None,
        writes: list[list[Any]],
        admission: Offer | None = None,
        known: Latest | None = None,
    ) -> dict[str, Any]:
        """The submit script's keys and arguments for ``new`` (``take_routes``: run a dispatch pass after it;
        ``writes``: the RQ writes that enqueue its job, made if that pass takes it; ``admission``: offer it to
        the API key's bucket first)."""
        run, claim = new.run, new.claim
        encoded: list[Any] = []
        for command in writes:
            encoded += [len(command), *command]
        flat: list[str] = []
        for name, value in run.to_redis().items():
            flat += [name, value]
        return {
            "keys": [
                keys.run(run.id),
                keys.run_graph(run.id),
                keys.backlog(run.tenant, run.priority),
                keys.rotation(run.priority),
                keys.RECENT_RUNS,
                keys.tenant(run.tenant),
                *(keys.backlog(run.tenant, p) for p in PRIORITIES),
                claim.redis_key,
                new.plan.pointer,
                keys.INFLIGHT,
                keys.DELAYED,
                keys.bucket(ADMISSION_KIND, admission.ident if admission is not None else "-"),
                keys.WORKFLOWS,
            ],
            "args": [
                run.id,
                run.tenant,
                repr(run.created_at),
                json.dumps(new.bound.graph),
                self.settings.max_queued,
                keys.RECENT_RUNS_MAX,
                self.wake_channel,
                json.dumps({"workflow": run.workflow, "priority": run.priority, "tenant": run.tenant}),
                claim.fingerprint,
                claim.ttl,
                new.plan.pointer_ttl,
                "" if take_routes is None else as_routes(take_routes),
                self.settings.dispatch_rate,
                self.settings.max_running,
                index_horizon(self.settings.run_ttl_seconds),
                self.settings.queue_name,
                len(encoded),
                *(admission.script_args() if admission is not None else NO_ADMISSION),
                run.workflow,
                entry_text(known) if known is not None else "",
                *encoded,
                *flat,
            ],
        }


@dataclass(frozen=True)
class _NewRun:
    """A run validated and bound, not stored yet: what storing it takes."""

    run: Run
    bound: Bound
    claim: IdempotencyClaim
    plan: CachePlan


def _parse_stored(reply: Any) -> tuple[int, str, Taken | None, bool]:
    """The submit script's answer: (code, value): 1 or 0 (queue full) with the limit, or an idempotency code;
    what its dispatch pass took (when it ran one), and whether it enqueued this run's job."""
    if len(reply) == 6:
        return int(reply[0]), str(reply[1]), parse_taken(reply[2], reply[3], reply[5]), bool(int(reply[4]))
    return int(reply[0]), str(reply[1]), None, False
