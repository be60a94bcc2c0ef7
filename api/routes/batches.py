"""Batches: ``POST /v1/runs/batch`` submits up to 1,000 runs in one request; ``/v1/batches/{id}`` follows them.

Each item is checked, admitted and stored on its own: the answer lists, in order, each item's run (202) or
problem (its status and problem+json), and one bad item refuses nothing else. Admission counts every run:
the key's bucket gives as many items as it holds now (the rest are 429s, to send again later). The runs are
stored in one round trip (a pipeline of the submit script, atomic per run), and one dispatch pass follows.
"""

from __future__ import annotations

import logging
import secrets
import time
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from redis.exceptions import RedisError
from starlette.concurrency import run_in_threadpool

from api import submitting
from api.auth import CanRead, CanSubmit
from api.body import parse_object, read_body
from api.models import BatchItemView, BatchSubmitted, BatchView
from api.problems import problem_of
from api.services import Services, ServicesDep
from api.views import Links, rfc3339, run_view
from dispatcher import idempotency, keys, metrics
from dispatcher.addresses import AddressNotAllowed, AllowList, check_url
from dispatcher.apikeys import Principal
from dispatcher.batches import MAX_ITEMS, new_batch_id
from dispatcher.binding import NATIVE_OPTION_KEYS, refuse_options
from dispatcher.errors import BadRequest, DispatchError, ParameterError, RateLimited
from dispatcher.eta import eta_seconds
from dispatcher.runs import RunStatus
from dispatcher.submit import Submission
from dispatcher.workflows import Workflow, parse_version

log = logging.getLogger(__name__)

router = APIRouter(tags=["batches"])

# An item names its workflow and carries a run body's fields (params, priority, options) and its own key.
ITEM_KEYS = frozenset({"workflow", "idempotency_key"}) | NATIVE_OPTION_KEYS | {"params"}
BATCH_KEYS = frozenset({"runs", "on_batch_done_url"})
MIN_BATCH_BODY_BYTES = 8 * 1024 * 1024  # a thousand runs with their parameters
MAX_PAGE = 1000

ITEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["workflow"],
    "properties": {
        "workflow": {"type": "string", "description": "the workflow id (GET /v1/workflows)"},
        "params": {"type": "object", "additionalProperties": True, "description": "its named parameters"},
        "priority": {"type": "string", "enum": ["high", "normal", "low"], "default": "normal"},
        "idempotency_key": {"type": "string", "description": "as the Idempotency-Key header of a single run"},
        "callback_urls": {"type": "object", "additionalProperties": {"type": "string"}},
        "cache": {"type": "boolean"},
        "timeout_seconds": {"type": "number", "exclusiveMinimum": 0},
    },
    "additionalProperties": False,
}
# Each item is checked on its own (a bad one is refused in the answer's items, the request stays 200), so the
# document lets an item be any value: those shaped as ITEM_SCHEMA are the ones accepted.
ANY_ITEM: dict[str, Any] = {
    "anyOf": [ITEM_SCHEMA, {"description": "anything else: refused on its own, with its problem in the answer"}]
}
BATCH_REQUEST_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "oneOf": [
                        {
                            "type": "object",
                            "required": ["runs"],
                            "properties": {
                                "runs": {"type": "array", "minItems": 1, "maxItems": MAX_ITEMS, "items": ANY_ITEM},
                                "on_batch_done_url": {
                                    "anyOf": [{"type": "string", "format": "uri"}, {"type": "null"}],
                                    "description": "called once, signed, when every run of the batch has ended",
                                },
                            },
                            "additionalProperties": False,
                        },
                        {"type": "array", "minItems": 1, "maxItems": MAX_ITEMS, "items": ANY_ITEM},
                    ]
                },
                "examples": {
                    "invert": {
                        "value": {
                            "runs": [
                                {"workflow": "invert", "params": {"color": 255}, "idempotency_key": "file-1/line-1"},
                                {"workflow": "invert", "params": {"color": 0}, "priority": "high"},
                            ]
                        }
                    }
                },
            }
        },
    },
}


@router.post("/v1/runs/batch", response_model=BatchSubmitted, openapi_extra=BATCH_REQUEST_DOC)
async def submit_batch(request: Request, svc: ServicesDep, who: CanSubmit) -> BatchSubmitted:
    """Submit up to 1,000 runs at once: ``{"runs": [{"workflow", "params", "priority", "idempotency_key", ...}],
    "on_batch_done_url"}`` (or the bare list). Each item is accepted (``status`` 202 with its ``run``; an item
    whose ``idempotency_key`` was used with the same run answers that run, ``replayed``) or refused on its own
    (its ``status`` and ``problem``). The answer is 200 whatever the items' fates; its ``batch_id`` names the
    runs it created (``GET /v1/batches/{id}``)."""
    raw = await read_body(request, max(svc.settings.max_body_bytes, MIN_BATCH_BODY_BYTES))
    items, done_url = _parse(raw, svc)
    return await run_in_threadpool(
        _submit,
        svc,
        who,
        items,
        done_url,
        Links.for_request(request, public_url=svc.settings.public_url, store=svc.store),
    )


def _parse(raw: bytes, svc: Services) -> tuple[list[Any], str | None]:
    """The items and the callback URL of a batch body: 400 for what is no batch at all, 422 naming the field."""
    if raw.lstrip().startswith(b"["):
        # The bare list, parsed once as the value of a member no client can name: a body that is no JSON text by
        # itself ('[...], "on_batch_done_url": ...' or '[], "runs": [...]') wraps into an object with other members.
        slot = secrets.token_hex(8)
        wrapped = parse_object(b'{"' + slot.encode() + b'":' + raw + b"}")
        if list(wrapped) != [slot]:
            raise BadRequest("request body is not valid JSON: a bare list of runs must be the whole body")
        body = {"runs": wrapped[slot]}
    else:
        body = parse_object(raw)
    for key in body:
        if key not in BATCH_KEYS:
            raise ParameterError(key, 'unknown field; a batch takes "runs" and "on_batch_done_url"')
    items = body.get("runs")
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_ITEMS:
        raise ParameterError("runs", f"must be a list of 1 to {MAX_ITEMS} runs")
    done_url = body.get("on_batch_done_url")
    if done_url is not None:
        if not isinstance(done_url, str) or not done_url.startswith(("http://", "https://")):
            raise ParameterError("on_batch_done_url", "must be an http:// or https:// URL")
        try:
            check_url(done_url, AllowList.parse(svc.settings.callback_allow))
        except AddressNotAllowed as exc:
            # check_url reports a failed lookup as AddressNotAllowed from its OSError: a host that does not resolve
            # now is let through (as a run's callback_urls); the sender checks each address again when it sends.
            if not isinstance(exc.__cause__, OSError):
                raise ParameterError("on_batch_done_url", str(exc)) from None
    return items, done_url


def _submit(svc: Services, who: Principal, items: list[Any], done_url: str | None, links: Links) -> BatchSubmitted:
    instance = "/v1/runs/batch"
    results: list[Submission | DispatchError | None] = [None] * len(items)
    admitted, refusal = _admit(svc, who, len(items))
    ready: list[tuple[int, tuple[Workflow, dict[str, Any], str | None]]] = []
    # Each workflow (and version) named is looked up once per batch, not once per item: one point in time.
    looked_up: dict[tuple[str, int | None], Workflow] = {}
    for index, item in enumerate(items):
        if index >= admitted:
            results[index] = refusal
            continue
        try:
            ready.append((index, _item(svc, who, item, looked_up)))
        except DispatchError as exc:
            results[index] = exc
    batch_id = new_batch_id() if ready else None
    if batch_id is not None:
        svc.batches.open(batch_id, who.tenant, done_url)
        stored = svc.submitter.accept_many([item for _, item in ready], tenant=who.tenant, batch_id=batch_id)
        made = [r.run.id for r in stored if isinstance(r, Submission) and not r.replayed]
        if not svc.batches.seal(batch_id, made):
            batch_id = None  # no item made a run: the replayed ones belong to the batches that made them
        for (index, _), outcome in zip(ready, stored, strict=True):
            results[index] = outcome
        _hand_out(svc, [r for r in stored if isinstance(r, Submission) and not r.replayed])
    views: list[BatchItemView] = []
    for index, result in enumerate(results):
        if isinstance(result, Submission):
            run = run_view(result.run, queue_position=None, links=links)
            views.append(BatchItemView(index=index, status=202, run=run, replayed=result.replayed))
        else:
            assert result is not None
            problem = problem_of(result, instance=f"{instance}#{index}")
            views.append(BatchItemView(index=index, status=problem["status"], problem=problem))
    accepted = sum(1 for v in views if v.status == 202)
    return BatchSubmitted(batch_id=batch_id, accepted=accepted, refused=len(views) - accepted, items=views)


def _admit(svc: Services, who: Principal, count: int) -> tuple[int, RateLimited | None]:
    """How many of ``count`` items the key's bucket admits now, and the refusal of the others (429)."""
    settings = svc.settings
    taken, admitted = svc.admission.take_up_to(
        who.key_id, who.tenant, count, rate=settings.submit_rate, burst=settings.submit_burst
    )
    if taken >= count:
        return taken, None
    decision = admitted.decision
    limits = f"{admitted.rate:g}/s, burst {admitted.burst:g}"
    refusal = RateLimited(
        f"this API key is over its submission rate ({limits}); send this item again later",
        retry_after=max(decision.retry_after, 1.0 / admitted.rate),
    )
    return taken, refusal


def _item(
    svc: Services, who: Principal, item: Any, looked_up: dict[tuple[str, int | None], Workflow]
) -> tuple[Workflow, dict[str, Any], str | None]:
    """An item as (workflow, run body, idempotency key), checked as a native run is; 422 naming what does not fit."""
    if not isinstance(item, dict):
        raise ParameterError("runs[]", "each run must be an object with workflow and params")
    workflow = item.get("workflow")
    if not isinstance(workflow, str) or not workflow:
        raise ParameterError("workflow", "is required (a workflow id)")
    for key in item:
        if key not in ITEM_KEYS:
            raise ParameterError(key, f"unknown field; a batch run takes: {', '.join(sorted(ITEM_KEYS))}")
    if item.get("stream"):
        raise ParameterError("stream", "a batch run cannot stream its events; follow it at /v1/runs/{id}/events")
    body = {k: v for k, v in item.items() if k not in ("workflow", "idempotency_key", "stream")}
    refuse_options(body, NATIVE_OPTION_KEYS)
    key = item.get("idempotency_key")
    if key is not None and not isinstance(key, str):
        raise ParameterError("idempotency_key", "must be a string")
    wanted = (workflow, parse_version(body.get("version")))
    if wanted not in looked_up:
        looked_up[wanted] = svc.registry.get(*wanted)
    return submitting.check_images(svc, who, looked_up[wanted], body), body, idempotency.parse_key(key)


def _hand_out(svc: Services, stored: list[Submission]) -> None:
    """Count the new runs and run one dispatch pass for them all (the scheduler wakes for what it leaves)."""
    for submission in stored:
        submitting.count_accepted(submission.run)
    if not any(s.run.status is RunStatus.QUEUED for s in stored):
        return
    try:
        taken = svc.handout.dispatch()
        if taken.wait is not None or len(taken.runs) < len(stored):
            svc.conns.text.publish(keys.SCHEDULER_WAKE, "submit")
    except RedisError as exc:  # stored: the scheduler's next pass hands them out
        log.warning("could not dispatch after a batch: %s", exc)


@router.get("/v1/batches/{batch_id}", response_model=BatchView)
async def get_batch(
    batch_id: str,
    request: Request,
    svc: ServicesDep,
    who: CanRead,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="runs on this page")] = 100,
    cursor: Annotated[str | None, Query(description="next_cursor of the page before")] = None,
) -> BatchView:
    """A batch: its runs' counts by status, their GPU-seconds, an ETA for the rest, and its runs, a page at a time."""
    links = Links.for_request(request, public_url=svc.settings.public_url, store=svc.store)
    return await run_in_threadpool(_batch_view, svc, who, batch_id, limit, cursor, links)


@router.post("/v1/batches/{batch_id}/cancel", response_model=BatchView)
async def cancel_batch(batch_id: str, request: Request, svc: ServicesDep, who: CanSubmit) -> BatchView:
    """Cancel every run of the batch that has not ended (queued ones never start; running ones are interrupted);
    the batch as it is then."""
    links = Links.for_request(request, public_url=svc.settings.public_url, store=svc.store)

    def cancel() -> BatchView:
        svc.batches.get(batch_id, who.tenant)  # 404 for an unknown batch, or another tenant's
        for run in svc.batches.runs(batch_id, start=0, count=len(svc.batches.run_ids(batch_id))):
            if not run.status.terminal:
                try:
                    if svc.canceller.cancel(run).value == "canceled":
                        metrics.observe_run_end(run.workflow, "canceled", time.time() - run.created_at)
                except DispatchError:
                    pass  # it ended meanwhile: nothing to cancel
        return _batch_view(svc, who, batch_id, 100, None, links)

    return await run_in_threadpool(cancel)


def _batch_view(
    svc: Services, who: Principal, batch_id: str, limit: int, cursor: str | None, links: Links
) -> BatchView:
    batch = svc.batches.get(batch_id, who.tenant)
    start = _page_start(cursor)
    runs = svc.batches.runs(batch_id, start=start, count=limit)
    left = batch.total - batch.ended
    # The last of what is left ends after about that many runs' time on the ready workers (the runs of this
    # page stand for the batch's mix of workflows).
    eta = None
    if left > 0 and runs:
        workers = sum(1 for w in svc.handout.workers() if w.ready)
        eta = eta_seconds(
            position=left - 1, workers=workers, mean_seconds=_mean_seconds(svc, {r.workflow for r in runs})
        )
    following = start + limit
    return BatchView(
        id=batch.id,
        created_at=rfc3339(batch.created_at) or "",
        total=batch.total,
        counts={s.value: batch.counts.get(s.value, 0) for s in RunStatus},
        ended=batch.ended,
        done=batch.done,
        gpu_seconds=round(batch.gpu_seconds, 3),
        eta_seconds=eta,
        on_batch_done_url=batch.on_done_url or None,
        runs=[run_view(r, queue_position=None, links=links) for r in runs],
        next_cursor=str(following) if following < batch.total else None,
    )


def _mean_seconds(svc: Services, workflows: set[str]) -> float | None:
    """The average recent GPU-seconds of ``workflows``' runs, None when none of them has run yet."""
    names = sorted(workflows)
    means: list[str | None] = svc.conns.text.hmget(keys.WORKFLOW_SECONDS, names)  # type: ignore[assignment]
    known = [float(m) for m in means if m]
    return sum(known) / len(known) if known else None


def _page_start(cursor: str | None) -> int:
    if cursor is None:
        return 0
    if not cursor.isdigit() or len(cursor) > 9:
        raise ParameterError("cursor", "is not one this API gave (pass next_cursor as it came)")
    return int(cursor)
