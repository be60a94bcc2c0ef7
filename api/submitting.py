"""Submitting a run, shared by the native route and every compatibility adapter: admission, the workflow
version to bind, input images, the script that stores and takes the run, and handing out what it took.

:func:`submit` is blocking (async routes call it through a thread pool); :func:`submit_async` stores the
common run on the event loop and hands anything else to :func:`submit` in a thread.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any

import anyio.to_thread
from fastapi import Header
from redis.exceptions import RedisError

from api.services import Services
from dispatcher import idempotency, keys, metrics, ratelimit
from dispatcher.addresses import AllowList
from dispatcher.admission import Admitted, Offer
from dispatcher.apikeys import Principal
from dispatcher.binding import image_values, refuse_options
from dispatcher.errors import DispatchError, ParameterError, RateLimited
from dispatcher.runs import Run, RunStatus
from dispatcher.scheduling.dispatch import Dispatched
from dispatcher.submit import AdmissionDenied, Submission, WorkflowStale
from dispatcher.uploads import Uploads, check_run_images
from dispatcher.workflows import Workflow, parse_version
from dispatcher.workflows.store import Latest

log = logging.getLogger(__name__)

IdempotencyKeyHeader = Annotated[
    str | None,
    Header(
        alias=idempotency.HEADER,
        description="a token of the client's choosing, kept 24 h per tenant: sent again with the same body, "
        "the answer is the first run (with `Idempotent-Replayed: true`); with another body, 409",
    ),
]
REPLAYED_HEADER = "Idempotent-Replayed"


@dataclass(frozen=True)
class Accepted:
    """A run just queued (or the first run of a replayed idempotency key), and the header fields to answer with:
    RateLimit's, and ``Idempotent-Replayed: true`` for a replay."""

    run: Run
    headers: dict[str, str]
    replayed: bool = False


def admit(svc: Services, who: Principal) -> dict[str, str]:
    """Take one submission from ``who``'s API key bucket; the RateLimit fields to send.

    Raises RateLimited (429, with Retry-After and the RateLimit fields) when the key is over its
    tenant's submit rate; nothing is stored then.
    """
    try:
        admitted = svc.submitter.admit(offer(svc, who), who.tenant)
    except AdmissionDenied as denied:
        raise rate_limited(denied.admitted) from None
    return rate_fields(admitted)


def offer(svc: Services, who: Principal) -> Offer:
    """A submission of ``who``'s to offer to its API key's bucket."""
    return Offer(who.key_id, rate=svc.settings.submit_rate, burst=svc.settings.submit_burst)


def rate_fields(admitted: Admitted) -> dict[str, str]:
    """The RateLimit fields of a submission's admission."""
    return ratelimit.headers(admitted.decision, rate=admitted.rate, burst=admitted.burst, policy_name="submit")


def rate_limited(admitted: Admitted) -> RateLimited:
    """The 429 of a submission over its API key's rate."""
    fields = rate_fields(admitted)
    limits = f"{admitted.rate:g}/s, burst {admitted.burst:g}"
    return RateLimited(
        f"this API key is over its submission rate ({limits}); retry in {fields['Retry-After']} s",
        retry_after=admitted.decision.retry_after,
        headers=fields,
    )


def submit(
    svc: Services,
    who: Principal,
    workflow_id: str,
    body: Mapping[str, Any],
    *,
    idempotency_key: str | None = None,
    options: frozenset[str] | None = None,
    run_id: str | None = None,
    fresh: bool = False,
) -> Accepted:
    """Admit, bind and store a run for ``who``'s tenant (all or nothing); under ``run_id`` if given.

    Raises RateLimited before anything else, then WorkflowNotFound or ParameterError (a bad
    ``Idempotency-Key``, ``stream`` or ``cache`` included), then Conflict (the idempotency key was
    used with another body), then QueueFull (the tenant's --max-queued); nothing is stored in any
    of these cases. A replayed key stores nothing either and gives the first run. With ``options``
    (the native route's), a run option of the body outside them is a ParameterError too; without,
    every product's options are taken (and those we do not use, ignored).

    The run is bound to the workflow version this process knows, which the script storing it checks is still
    the latest; ``fresh`` (or when that check fails): to the version read now.
    """
    try:
        return _submit(svc, who, workflow_id, body, idempotency_key, options, run_id, fresh)
    except WorkflowStale as stale:
        log.info("workflow %s has a version this process had not read: binding run again", workflow_id)
        return _submit(svc, who, workflow_id, body, idempotency_key, options, stale.run_id, True)


def _submit(
    svc: Services,
    who: Principal,
    workflow_id: str,
    body: Mapping[str, Any],
    idempotency_key: str | None,
    options: frozenset[str] | None,
    run_id: str | None,
    fresh: bool,
) -> Accepted:
    # The submission is offered to the key's bucket in the script that stores it (one round trip for both). One
    # refused before that script (a bad parameter) is offered on its own, so it counts, and a key over its rate
    # hears that first; so is one with input images, before any of them is stored as an upload.
    fields: dict[str, str] | None = None
    try:
        key = _checked_options(body, idempotency_key, options)
        # The workflow as this process knows it (no read): the script that stores the run checks it is the latest.
        # Not with input images: they are checked and stored against the workflow read now.
        known = None if fresh else svc.registry.cached(workflow_id, parse_version(body.get("version")))
        if known is not None and has_images(known[0], body):
            known = None
        workflow = known[0] if known is not None else find_workflow(svc, workflow_id, body)
        images = has_images(workflow, body)
    except DispatchError:
        admit(svc, who)
        raise
    if images:
        fields = admit(svc, who)
        check_images(svc, who, workflow, body)
    # The script that stores the run also runs a dispatch pass (the scheduler's take): where a worker has
    # room, the run is on its way without waiting for the scheduler to wake. Stored is stored: a Redis error
    # reading the fleet must not turn this request away.
    try:
        done = svc.submitter.accept(
            workflow,
            body,
            tenant=who.tenant,
            idempotency_key=key,
            take_routes=ready_routes(svc),
            enqueue_writes=svc.handout.enqueue_writes,
            admission=offer(svc, who) if fields is None else None,
            known=known[1] if known is not None else None,
            run_id=run_id,
        )
    except AdmissionDenied as denied:
        raise rate_limited(denied.admitted) from None
    if done.admitted is not None:
        fields = rate_fields(done.admitted)
    assert fields is not None
    accepted = _accepted(done, fields)
    if not done.replayed and done.run.status is RunStatus.QUEUED:
        hand_out(svc, done)
    return accepted


async def submit_async(
    svc: Services,
    who: Principal,
    workflow_id: str,
    body: Mapping[str, Any],
    *,
    idempotency_key: str | None = None,
    options: frozenset[str] | None = None,
    run_id: str | None = None,
) -> Accepted:
    """:func:`submit`, on the event loop where nothing on the way blocks, which is most runs: a thread hop
    costs more CPU than the rest of a submission. Everything else (a run refused before its script, input
    images, callback URLs, the result cache, a workflow to read) goes to :func:`submit` in a thread, with
    nothing written or admitted here first. The fleet's view is read in a thread, off the path of most."""
    done: Submission | str | None = None
    fast = _fast(svc, workflow_id, body, idempotency_key, options)
    if fast is not None:
        workflow, known, key = fast
        if not svc.handout.view_fresh():  # the fleet's view is read again twice a second at the most, in a thread
            refresh = _refresh_views(svc)  # one read at a time; meanwhile submissions go on with the last view
            if not svc.handout.view_usable():  # none yet, or too old to use: this one waits for the read
                await asyncio.shield(refresh)
                if not svc.handout.view_usable():  # the read failed: again, its error this submission's answer
                    await anyio.to_thread.run_sync(_read_views, svc)
        try:
            done = await svc.submitter.accept_async(
                svc.conns.aio,
                workflow,
                known,
                body,
                tenant=who.tenant,
                admission=offer(svc, who),
                idempotency_key=key,
                take_routes=ready_routes(svc),
                enqueue_writes=svc.handout.enqueue_writes,
                run_id=run_id,
            )
        except AdmissionDenied as denied:
            raise rate_limited(denied.admitted) from None
    if not isinstance(done, Submission):  # None, or the id drawn for a run to bind to a version read since
        call = functools.partial(
            submit,
            svc,
            who,
            workflow_id,
            body,
            idempotency_key=idempotency_key,
            options=options,
            run_id=done if done is not None else run_id,
            fresh=done is not None,
        )
        accepted: Accepted = await anyio.to_thread.run_sync(call)
        return accepted
    assert done.admitted is not None
    accepted = _accepted(done, rate_fields(done.admitted))
    if not done.replayed and done.run.status is RunStatus.QUEUED:
        if _hand_out_writes(done):
            await anyio.to_thread.run_sync(hand_out, svc, done)
        else:
            hand_out(svc, done)  # counts only: the script enqueued the run's job, and took nothing else
    return accepted


def _fast(
    svc: Services,
    workflow_id: str,
    body: Mapping[str, Any],
    idempotency_key: str | None,
    options: frozenset[str] | None,
) -> tuple[Workflow, Latest, str | None] | None:
    """The workflow this process has read and the idempotency key, when :func:`submit_async` may store the run on
    the event loop; None when :func:`submit` must (a thread), which also refuses what is wrong here."""
    try:
        key = _checked_options(body, idempotency_key, options)
        known = svc.registry.cached(workflow_id, parse_version(body.get("version")))
        if known is None or has_images(known[0], body):
            return None
    except DispatchError:
        return None
    return known[0], known[1], key


def _checked_options(
    body: Mapping[str, Any], idempotency_key: str | None, options: frozenset[str] | None
) -> str | None:
    """The idempotency key, once it and the body's run options are checked: ParameterError (a 422 before anything
    is stored) for a malformed key, an option outside ``options`` or a malformed ``stream`` flag."""
    key = idempotency.parse_key(idempotency_key)
    if options is not None:
        refuse_options(body, options)
    wants_stream(body)
    return key


def _read_views(svc: Services) -> None:
    # What the fleet can run is derived in this thread too (``Handout.on_read``), before anyone sees the new view.
    if not svc.handout.view_fresh():  # read by another thread just now: once is enough
        svc.handout.refresh()


# The fleet's view being read, by Handout (a reference each, or the event loop may drop a task before its end).
_REFRESHES: dict[int, asyncio.Task[None]] = {}


def _refresh_views(svc: Services) -> asyncio.Task[None]:
    """The read of the fleet's view under way, or a new one: in a thread, one at a time, while submissions go on
    with the last view (up to ``handout.STALE_MAX_AGE``). On a submission's path, it cost the submissions that
    came upon it a thread hop each (a millisecond and a half at the median, in a run's trace)."""
    loop, key = asyncio.get_running_loop(), id(svc.handout)
    task = _REFRESHES.get(key)
    if task is None or task.done() or task.get_loop() is not loop:
        svc.handout.refreshing = True
        task = _REFRESHES[key] = loop.create_task(_refresh(svc))
        task.add_done_callback(lambda done: _REFRESHES.pop(key) if _REFRESHES.get(key) is done else None)
    return task


async def _refresh(svc: Services) -> None:
    try:
        await anyio.to_thread.run_sync(_read_views, svc)
    except RedisError as exc:  # the next submission tries again; once too old, the view is read on its path
        log.warning("could not read the fleet's view: %s", exc)
    except Exception:  # a task's error would otherwise surface only when the task is collected
        log.exception("could not read the fleet's view")
    finally:
        svc.handout.refreshing = False


def _accepted(done: Submission, fields: dict[str, str]) -> Accepted:
    if done.replayed:
        return Accepted(run=done.run, headers={**fields, REPLAYED_HEADER: "true"}, replayed=True)
    count_accepted(done.run)
    return Accepted(run=done.run, headers=fields)


def _hand_out_writes(done: Submission) -> bool:
    """Whether :func:`hand_out` writes to Redis for ``done`` (else it only counts)."""
    _, others, wake = _to_hand_out(done)
    return bool(others) or wake


def _to_hand_out(done: Submission) -> tuple[list[Dispatched], list[Dispatched], bool]:
    """What the submit script's pass took: this run with its job written, the others to enqueue; and whether the
    scheduler must be woken (the pass left this run behind)."""
    run, taken = done.run, done.taken
    runs = taken.runs if taken is not None else []
    handed = [d for d in runs if done.handed and d.run_id == run.id]
    others = [d for d in runs if d not in handed]
    wake = taken is None or taken.wait is not None or all(d.run_id != run.id for d in runs)
    return handed, others, wake


def ready_routes(svc: Services) -> str | None:
    try:
        return svc.handout.ready_routes()
    except RedisError:
        return None  # then the scheduler hands the run out


def hand_out(svc: Services, done: Submission) -> None:
    """Enqueue what the submit script's dispatch pass took (but the new run's job, which the script wrote). The
    scheduler is woken only if the pass left the run behind (no room, a tenant limit): it then hands it out
    when a slot frees or the limit allows."""
    handed, others, wake = _to_hand_out(done)
    try:
        svc.handout.count(handed)
        if others:
            svc.handout.enqueue(others)
        if wake:
            svc.conns.text.publish(keys.SCHEDULER_WAKE, "submit")
    except RedisError as exc:
        # Stored, and maybe taken: the scheduler's next pass (within a second) hands it out, or the reaper
        # dispatches a taken run again after dispatch_timeout.
        log.warning("could not dispatch after a submission: %s", exc)


def count_accepted(run: Run) -> None:
    """Count a new run; a result cache hit is stored already succeeded, so it also ends here."""
    metrics.RUNS_SUBMITTED.labels(run.workflow, run.priority.value).inc()
    if run.status is RunStatus.SUCCEEDED:
        metrics.observe_run_end(run.workflow, run.status.value, (run.finished_at or run.created_at) - run.created_at)


def wants_stream(body: Mapping[str, Any]) -> bool:
    """Whether a run body asks for its events as the answer (``"stream": true``); ParameterError unless a boolean."""
    value = body.get("stream", False)
    if not isinstance(value, bool):
        raise ParameterError("stream", "must be true or false")
    return value


# -- input images ------------------------------------------------------------------------------------------------


def find_workflow(svc: Services, workflow_id: str | Workflow, body: Mapping[str, Any]) -> Workflow:
    """The workflow (version) a run is bound to (``workflow_id`` may be it, looked up already)."""
    if isinstance(workflow_id, Workflow):
        return workflow_id
    return svc.registry.get(workflow_id, parse_version(body.get("version")))


def has_images(workflow: Workflow, body: Mapping[str, Any]) -> bool:
    """Whether the run body gives any of the workflow's image parameters."""
    return bool(image_values(workflow, body))


def check_images(svc: Services, who: Principal, workflow_id: str | Workflow, body: Mapping[str, Any]) -> Workflow:
    """Check the run's input images and store its base64 ones as uploads (ParameterError, 422, naming one);
    returns the workflow (version) the run is bound to (``workflow_id`` may be it, looked up already)."""
    uploads = Uploads(svc.conns.text, svc.store)
    allow = AllowList.parse(svc.settings.callback_allow)
    workflow = find_workflow(svc, workflow_id, body)
    check_run_images(uploads, workflow, body, tenant=who.tenant, allow=allow, max_bytes=svc.settings.input_max_bytes)
    return workflow
