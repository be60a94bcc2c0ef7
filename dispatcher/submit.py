"""Accepting a run: bind its parameters, then store it in its tenant's backlog, all or nothing.

One Lua script, the submit script (``dispatcher.submit_script``), admits and stores the run and may take it
in a dispatch pass; a cache hit is stored by the cache's own script instead, which checks the idempotency
key the same way. What the scheduler does not take here it hands to RQ later.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from redis import Redis
from redis.asyncio import Redis as AsyncRedis
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

from dispatcher import keys
from dispatcher.addresses import AllowList
from dispatcher.admission import Admission, Admitted, Offer, parse_offer
from dispatcher.binding import bind
from dispatcher.cache import ResultCache, wants_cache
from dispatcher.errors import DispatchError, QueueFull, RunNotFound
from dispatcher.idempotency import CONFLICT, REPLAYED, IdempotencyClaim
from dispatcher.pipelining import send_as_made
from dispatcher.routing.capabilities import needs_of
from dispatcher.routing.store import FleetCapabilities
from dispatcher.run_options import parse_callbacks, parse_priority, parse_timeout
from dispatcher.runs import Run, RunStore, new_run, new_run_id, run_of
from dispatcher.scheduling.dispatch import Dispatched, Taken
from dispatcher.settings import Settings
from dispatcher.submit_script import STALE, SUBMIT, NewRun, parse_stored, store_call
from dispatcher.tenants import DEFAULT_TENANT
from dispatcher.workflows import Registry, Workflow, parse_version
from dispatcher.workflows.store import Latest, entry_text

log = logging.getLogger(__name__)

PIPELINE_CHUNK = 50  # runs accept_many sends to Redis at a time


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
        self._script = redis.register_script(SUBMIT)
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
        writes = _first_job(new, take_routes, enqueue_writes)
        reply = self._script(**self._call(new, take_routes, writes, admission, known))
        if int(reply[0]) == STALE:
            raise WorkflowStale(new.run.id)
        admitted, (code, value, taken, handed) = _answer(reply, admission is not None)
        return dataclasses.replace(self._outcome(new, code, value, taken=taken, handed=handed), admitted=admitted)

    def _call(
        self,
        new: NewRun,
        take_routes: str | int | None,
        writes: list[list[Any]],
        admission: Offer | None = None,
        known: Latest | None = None,
    ) -> dict[str, Any]:
        return store_call(new, self.settings, self.wake_channel, take_routes, writes, admission, known)

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
        run_id: str | None = None,
    ) -> Submission | str | None:
        """:meth:`accept` on an event loop (``aio``), for the common case, which needs no I/O but the script: a
        workflow this process has read (``known``, see ``Registry.cached``), no callback URLs (checked against
        DNS), no result cache, the fleet's view read already. Where :meth:`accept` must do it instead, nothing
        is written or admitted here, and the answer is None (a run refused before the script: it is offered to
        the bucket on its own there) or the id to give :meth:`accept` (a version this process had not read: the
        run is bound again, under the id it was drawn). ``run_id``: an id drawn already, nothing stored under it."""
        try:
            if body.get("callback_urls") is not None or wants_cache(workflow, body):
                return None
            new = self._prepare(workflow, body, tenant=tenant, idempotency_key=idempotency_key, run_id=run_id)
        except DispatchError:
            return None
        writes = _first_job(new, take_routes, enqueue_writes)
        if self._aio_script is None:
            self._aio_script = aio.register_script(SUBMIT)
        reply = await self._aio_script(**self._call(new, take_routes, writes, admission, known))
        if int(reply[0]) == STALE:
            return new.run.id
        admitted, (code, value, taken, handed) = _answer(reply, True)
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
        stored: list[tuple[int, NewRun]] = []

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
                call = self._call(new, None, [])
                chunk.append(("EVALSHA", self._script.sha, len(call["keys"]), *call["keys"], *call["args"]))
                if len(chunk) == PIPELINE_CHUNK:
                    yield chunk
                    chunk = []
            yield chunk

        self.redis.script_load(SUBMIT)  # the chunks name it by its sha
        replies = send_as_made(self.redis, chunks())
        for (index, new), reply in zip(stored, replies, strict=True):
            if isinstance(reply, NoScriptError):  # Redis lost its scripts since (restarted): nothing ran, so again
                reply = self._script(**self._call(new, None, []))
            if isinstance(reply, Exception):
                raise reply
            code, value, _, _ = parse_stored(reply)
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
    ) -> NewRun:
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
        return NewRun(run, bound, claim, plan)

    def _outcome(
        self, new: NewRun, code: int, value: str, *, taken: Taken | None = None, handed: bool = False
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


def _first_job(
    new: NewRun, take_routes: str | int | None, enqueue_writes: Callable[[Dispatched], list[list[Any]]] | None
) -> list[list[Any]]:
    """The RQ writes of the new run's first job, for the submit script to make if its pass takes the run."""
    if take_routes is None or enqueue_writes is None:
        return []
    return enqueue_writes(Dispatched(new.run.id, 1, new.run.priority.value, new.run.timeout))


def _answer(reply: list[Any], admitting: bool) -> tuple[Admitted | None, tuple[int, str, Taken | None, bool]]:
    """The submit script's answer (not STALE): the admission (``admitting``: the run was offered to a bucket,
    whose answer ends the reply; AdmissionDenied over the rate), and what was stored (``parse_stored``)."""
    admitted = parse_offer(reply[-1]) if admitting else None
    if admitted is not None:
        reply = reply[:-1]
        if not admitted.decision.allowed:
            raise AdmissionDenied(admitted)
    return admitted, parse_stored(reply)
