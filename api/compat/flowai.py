"""Compatibility with FlowAI's workflow API: ``POST /v1/api/workflow/run/{id}``, synchronous or streamed.

Without ``"stream"`` the request waits (up to :data:`WAIT_SECONDS`) for the run to end and answers its
output URLs. A run that fails is a 502 problem carrying the run's error; one still going when the wait
ends is a 504 problem naming the run, which goes on and can be followed at ``/v1/runs/{id}``.

With ``"stream": true`` the answer is FlowAI's server-sent events, built from the run's own events
(:class:`FlowAIStream`): ``event: msg`` frames ``{"Node", "Msg", "Type", "Data"}`` for the start and
for each node starting and finishing, then ``event: output`` with ``{"output": [urls], "total_time"}``,
or ``event: error``. FlowAI's clients send their API key as ``X-API-KEY``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter, FastAPI, Request, Response
from starlette.concurrency import run_in_threadpool

from api import operations, sse
from api.auth import CanSubmit
from api.operations import IdempotencyKeyHeader
from api.routes import events
from api.services import JsonBody, ServicesDep
from api.views import Links
from dispatcher.errors import RunFailed, RunStillGoing
from dispatcher.events import Event
from dispatcher.runs import Run, RunStatus

router = APIRouter(prefix="/v1/api/workflow", tags=["compat: FlowAI"])

WAIT_SECONDS = operations.MAX_WAIT_SECONDS


def install(app: FastAPI) -> None:
    app.include_router(router)


@router.post(
    "/run/{workflow_id}",
    response_model=None,
    responses={200: {"content": {sse.MEDIA_TYPE: {}}, "description": 'the outputs; with "stream": true, events'}},
)
async def run_workflow(
    workflow_id: str,
    request: Request,
    response: Response,
    body: JsonBody,
    svc: ServicesDep,
    who: CanSubmit,
    idempotency_key: IdempotencyKeyHeader = None,
) -> dict[str, Any] | Response:
    """Run a workflow and wait for it: ``{"input": {...}}`` in, ``{"output": [urls], "total_time", "run_id"}`` out.

    With ``"stream": true``, FlowAI's server-sent events of the run instead (``msg``, then ``output`` or ``error``).
    """
    accepted = await run_in_threadpool(operations.submit, svc, who, workflow_id, body, idempotency_key=idempotency_key)
    links = Links.for_request(request, public_url=svc.settings.public_url, store=svc.store)
    if operations.wants_stream(body):
        graph = svc.registry.get(accepted.run.workflow).graph
        class_types = {node_id: str(node.get("class_type", "")) for node_id, node in graph.items()}
        render = FlowAIStream(accepted.run, links, class_types)
        return events.stream_response(request, svc, accepted.run, render=render, headers=accepted.headers)
    response.headers.update(accepted.headers)
    run = await operations.wait(svc, accepted.run.id, WAIT_SECONDS, who)
    if not run.status.terminal:
        raise RunStillGoing(run.id, WAIT_SECONDS)
    if run.status is not RunStatus.SUCCEEDED:
        raise RunFailed(run.id, run.status.value, run.error)
    # Time as the caller lived it: queueing included, since FlowAI has no separate queue time.
    finished = run.finished_at if run.finished_at is not None else run.created_at
    return {
        "output": [links.output(run.id, o) for o in run.outputs],
        "total_time": round(max(finished - run.created_at, 0.0), 3),
        "run_id": run.id,
    }


def _frame(event: str, data: Mapping[str, Any]) -> bytes:
    return sse.frame(json.dumps(data, ensure_ascii=False, separators=(",", ":")), event=event)


class FlowAIStream:
    """Renders one run's events as FlowAI's stream; a renderer for :func:`api.routes.events.stream_response`.

    ``queued`` is FlowAI's ``start`` (its Data: the run's parameters); each node ComfyUI reports
    executing opens a ``start_node`` and closes the one before with ``finish_node`` and its
    ``time_spend``; ``done`` closes the last node and sends ``output`` with every output URL and the
    time since queueing; ``error`` and ``canceled`` send ``error``. Times come from the event ids
    (Redis stream ids are millisecond timestamps), so a client reading late sees the run's real times.
    """

    def __init__(self, run: Run, links: Links, class_types: Mapping[str, str]) -> None:
        self.run = run
        self.links = links
        self.class_types = class_types
        self.started: float | None = None
        self.node: str = ""
        self.node_started = 0.0
        self.urls: list[str] = []

    def __call__(self, event: Event) -> bytes:
        now = sse.event_time(event) or time.time()
        if event.type == "queued":
            self.started = now
            return self._msg(self.run.workflow, "start", "start", self.run.params)
        if event.type == "progress":
            node = str(event.data.get("node") or "")
            if not node or node == self.node:
                return b""
            out = self._finish_node(now)
            self.node, self.node_started = node, now
            return out + self._msg(node, f"Start node {node}, type {self._type(node)}", "start_node", None)
        if event.type in ("started", "retrying"):
            self.node = ""  # a new attempt starts over; the old attempt's node never finished
            return b""
        if event.type == "output":
            self.urls.append(sse.public_data(event, self.run.id, self.links)["url"])
            return b""
        if event.type == "done":
            total = now - (self.started if self.started is not None else self.run.created_at)
            data = {"output": self.urls, "total_time": round(max(total, 0.0), 3), "run_id": self.run.id}
            return self._finish_node(now) + _frame("output", data)
        if event.terminal:
            error = event.data.get("error") or {}
            message = error.get("message") if isinstance(error, dict) else None
            data = {"error": message or f"run ended with status {event.data.get('status', event.type)}"}
            return _frame("error", data | {"status": event.data.get("status", event.type), "run_id": self.run.id})
        return b""

    def _finish_node(self, now: float) -> bytes:
        if not self.node:
            return b""
        node, self.node = self.node, ""
        spent = {"time_spend": round(max(now - self.node_started, 0.0), 6)}
        return self._msg(node, f"Finish node {node}, type {self._type(node)}", "finish_node", spent)

    def _type(self, node: str) -> str:
        return self.class_types.get(node, "") or "unknown"

    def _msg(self, node: str, msg: str, kind: str, data: Any) -> bytes:
        return _frame("msg", {"Node": node, "Msg": msg, "Type": kind, "Data": data})
