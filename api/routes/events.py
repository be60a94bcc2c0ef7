"""``GET /v1/runs/{id}/events``: a run's life as Server-Sent Events, resumable with ``Last-Event-ID``.

Every run's events already sit in a Redis stream (``dispatcher.events``), written by the scripts
that change the run. A client gets the history after its ``Last-Event-ID`` (all of it without one),
then the live events, and the response ends after the terminal event (``done``, ``error`` or
``canceled``): a run that already ended answers everything at once.

Live events come from ``XREAD BLOCK`` on an asyncio Redis client of the connection's own: the event
loop never blocks and nothing polls. While nothing happens a keep-alive comment goes out every
:data:`KEEPALIVE_SECONDS`. The same stream serves ``"stream": true`` on run creation, natively and
in FlowAI's format (:func:`stream_response` with another renderer).
"""

from __future__ import annotations

import json
import logging
import weakref
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Annotated, Any

import anyio
import redis.asyncio
from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import StreamingResponse
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.concurrency import run_in_threadpool

from api import operations, sse
from api.auth import CanRead
from api.services import Services, ServicesDep
from api.views import Links
from dispatcher import keys
from dispatcher.events import TERMINAL_EVENTS, Event
from dispatcher.runs import Run, RunStatus

log = logging.getLogger(__name__)

router = APIRouter(tags=["runs"])

KEEPALIVE_SECONDS = 15.0
READ_BATCH = 500  # entries per XREAD: a long history goes out in a few large writes, not thousands of small ones
CLIENT_NAME = "comfy-dispatch-events"
TERMINAL_OF_STATUS = {RunStatus.SUCCEEDED: "done", RunStatus.FAILED: "error", RunStatus.CANCELED: "canceled"}

Renderer = Callable[[Event], bytes]
"""Turns one run event into the bytes to send (b"" to send nothing); may keep state across events."""

AsyncRedisFactory = Callable[[], redis.asyncio.Redis]
"""Makes the asyncio Redis client of one stream; ``app.state.event_redis`` may replace the default (tests)."""


async def follow(
    client: redis.asyncio.Redis, run_id: str, after: str, *, keepalive: float | None = None
) -> AsyncIterator[list[Event]]:
    """Batches of the run's events after stream id ``after``; an empty batch after each ``keepalive`` s of silence
    (default :data:`KEEPALIVE_SECONDS`).

    Ends after the terminal event, and at once for a run that ended before ``after`` was sent.
    Also ends if the run disappears (expired), and with an event made up from the record (no id)
    if the run ended without one in its stream (a record written by hand, or by a version that
    kept no events), so no client waits forever.
    """
    stream = keys.run_events(run_id)
    wait_ms = int((KEEPALIVE_SECONDS if keepalive is None else keepalive) * 1000)
    last = after
    block: int | None = None  # the first read only collects the history: it must not wait
    while True:
        entries = await _read(client, stream, last, block)
        if not entries:
            status = await _status(client, run_id)
            if status is None or status.terminal:
                # The terminal event is written by the script that writes the status: read once more.
                entries = await _read(client, stream, last, None)
                if not entries:
                    if status is not None and not await _ended_in_stream(client, stream):
                        yield [Event(id="", type=TERMINAL_OF_STATUS[status], data={"status": status.value})]
                    return
            elif block is None:
                block = wait_ms
                continue
            else:
                yield []
                continue
        batch: list[Event] = []
        for entry_id, fields in entries:
            event = Event(id=entry_id, type=fields.get("type", ""), data=json.loads(fields.get("data") or "{}"))
            batch.append(event)
            if event.terminal:
                yield batch
                return
        yield batch
        last = entries[-1][0]
        block = wait_ms


async def _read(
    client: redis.asyncio.Redis, stream: str, after: str, block: int | None
) -> list[tuple[str, dict[str, str]]]:
    reply: Any = await client.xread({stream: after}, count=READ_BATCH, block=block)
    if not reply:
        return []
    # RESP2 answers [[stream, entries]], RESP3 {stream: [entries]}; one stream either way.
    entries: list[tuple[str, dict[str, str]]] = (
        next(iter(reply.values()))[0] if isinstance(reply, dict) else reply[0][1]
    )
    return entries


async def _status(client: redis.asyncio.Redis, run_id: str) -> RunStatus | None:
    """The run's status now, or None once its record is gone."""
    raw = await client.hget(keys.run(run_id), "status")
    if raw is None:
        return None
    return RunStatus(raw.decode() if isinstance(raw, bytes) else raw)


async def _ended_in_stream(client: redis.asyncio.Redis, stream: str) -> bool:
    """Whether the stream's last entry is a terminal event (which the client then has had already)."""
    last: Any = await client.xrevrange(stream, count=1)
    return bool(last) and last[0][1].get("type") in TERMINAL_EVENTS


def has_seen_end(svc: Services, run: Run, after: str | None) -> bool:
    """Whether a client that last saw event ``after`` already had ``run``'s terminal event (a blocking read)."""
    if after is None or not run.status.terminal:
        return False
    last: Any = svc.conns.text.xrevrange(keys.run_events(run.id), count=1)
    if not last or last[0][1].get("type") not in TERMINAL_EVENTS:
        return False
    return _id_order(after) >= _id_order(last[0][0])


def _id_order(event_id: str) -> tuple[int, int]:
    millis, _, seq = event_id.partition("-")
    return int(millis), int(seq or 0)


def redis_factory(request: Request, svc: Services) -> AsyncRedisFactory:
    """The app's factory of stream clients: ``app.state.event_redis`` if set, else a client of settings.redis_url."""
    factory: AsyncRedisFactory | None = getattr(request.app.state, "event_redis", None)
    if factory is not None:
        return factory
    url = svc.settings.redis_url

    def connect() -> redis.asyncio.Redis:
        # A blocked XREAD holds the socket silent up to a keep-alive period: the read timeout must outlast it.
        return redis.asyncio.Redis.from_url(
            url,
            decode_responses=True,
            socket_connect_timeout=5,
            socket_timeout=KEEPALIVE_SECONDS + 10,
            client_name=CLIENT_NAME,  # CLIENT LIST tells how many streams are open
        )

    return connect


def stream_response(
    request: Request,
    svc: Services,
    run: Run,
    *,
    after: str | None = None,
    render: Renderer | None = None,
    headers: Mapping[str, str] | None = None,
) -> StreamingResponse:
    """A 200 ``text/event-stream`` of ``run``'s events after ``after`` (all without), rendered natively by default.

    A stream holds a Redis connection of its own while it lasts: it counts as one of its tenant's waiting
    requests (TooManyWaits, 429, when the tenant has its most already).
    """
    links = Links.for_request(request, public_url=svc.settings.public_url, store=svc.store)
    renderer = render or (lambda event: sse.native_frame(event, run.id, links))
    connect = redis_factory(request, svc)
    svc.wait_quota.take(run.tenant)
    release = _Once(lambda: svc.wait_quota.give(run.tenant))

    async def body() -> AsyncIterator[bytes]:
        client = connect()
        try:
            async for batch in follow(client, run.id, after or "0-0"):
                # One write per batch: at high event rates, a write per event would cost more than the events.
                yield b"".join(renderer(event) for event in batch) if batch else sse.KEEP_ALIVE
        except (RedisConnectionError, RedisTimeoutError) as exc:
            # The headers are gone already, so no problem response: end the stream, and the client
            # reconnects with its Last-Event-ID (an EventSource does so by itself) and loses nothing.
            log.warning("event stream of run %s ended: Redis unavailable: %s", run.id, exc)
        finally:
            release()
            # Also on a client leaving, when this task is being cancelled: shield the close, or it is cancelled too.
            with anyio.CancelScope(shield=True):
                await client.aclose()

    stream = body()
    # A client gone before the first byte: the body never starts, so its finally never runs; this does.
    weakref.finalize(stream, release)
    return StreamingResponse(stream, media_type=sse.MEDIA_TYPE, headers={**sse.HEADERS, **(headers or {})})


class _Once:
    """Calls its function the first time it is called, never again."""

    def __init__(self, function: Callable[[], None]) -> None:
        self._function: Callable[[], None] | None = function

    def __call__(self) -> None:
        function, self._function = self._function, None
        if function is not None:
            function()


# What sse.parse_event_id takes (a blank value is none), for /docs only: it checks the value itself. A string: the
# null FastAPI adds for an optional parameter would be sent as the text "null".
EVENT_ID_SCHEMA: dict[str, Any] = {
    "type": "string",
    "pattern": rf"^\s*({sse.EVENT_ID_RE.pattern})?\s*$",
    "examples": ["1700000000000-0"],
}


@router.get(
    "/v1/runs/{run_id}/events",
    response_class=StreamingResponse,
    responses={
        200: {"content": {sse.MEDIA_TYPE: {}}, "description": "the run's events, ending after the last"},
        204: {"description": "the run has ended and the client had its last event already"},
    },
)
async def run_events(
    run_id: str,
    request: Request,
    svc: ServicesDep,
    who: CanRead,
    last_event_id_header: Annotated[
        str | None,
        Header(
            alias="Last-Event-ID",
            description="resume after this event id (what EventSource sends)",
            json_schema_extra=EVENT_ID_SCHEMA,
        ),
    ] = None,
    last_event_id: Annotated[
        str | None,
        Query(
            description="resume after this event id (for clients that cannot set headers)",
            json_schema_extra=EVENT_ID_SCHEMA,
        ),
    ] = None,
) -> Response:
    """The run's events as Server-Sent Events: ``queued``, ``started``, ``progress``, ``output`` (with its ``url``),
    ``retrying``, then ``done``, ``error`` or ``canceled``, after which the response ends.

    Each event carries its id; a client that reconnects with ``Last-Event-ID`` (or ``?last_event_id=``)
    gets only the later ones. A run that already ended answers its whole history at once; a client that
    already had its end gets 204 No Content, which tells a browser's EventSource to stop reconnecting.
    """
    # Both are checked, though the header wins: a bad value is a 422 wherever it is.
    header, query = sse.parse_event_id(last_event_id_header), sse.parse_event_id(last_event_id, name="last_event_id")
    after = header or query
    run = await operations.get_run_async(svc, run_id, who)
    if await run_in_threadpool(has_seen_end, svc, run, after):
        return Response(status_code=204)
    return stream_response(request, svc, run, after=after)
