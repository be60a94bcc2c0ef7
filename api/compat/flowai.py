"""Compatibility with FlowAI's workflow API: ``POST /v1/api/workflow/run/{id}``, synchronous or streamed.

Without ``"stream"`` the request waits (up to :data:`WAIT_SECONDS`) for the run to end and answers its
output URLs as ``output``, or, when every output is text (FlowAI's text workflows answer ``{"output": "..."}``),
the text itself; ``outputs`` lists each output with its kind, content type and (a text) its string.

FlowAI tells its clients to try a 5xx again later, so a run that fails answers by whose fault it was
(``RunFailed.of``): a 422 naming the cause when the request itself cannot succeed (a node error, a missing
model, a bad input, its time limit), a 409 when it was canceled, and only a failure of the infrastructure
after every attempt (out of GPU memory, ComfyUI or storage down) a 503 with ``Retry-After``; each problem
carries the run's error. A run still going when the wait ends is no
error: 202 with its ``run_id`` and ``Location: /v1/runs/{id}`` (trying again would run it twice).

With ``"stream": true`` the answer is FlowAI's server-sent events, built from the run's own events
(:class:`FlowAIStream`): ``event: msg`` frames ``{"Node", "Msg", "Type", "Data"}`` for the start and
for each node starting and finishing, then ``event: output`` with ``{"output", "outputs", "total_time"}`` as above,
or ``event: error``. FlowAI's clients send their API key as ``X-API-KEY``.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import APIRouter, FastAPI, Request, Response
from starlette.concurrency import run_in_threadpool

from api import operations, sse, submitting
from api.auth import CanSubmit
from api.routes import events
from api.routes.runs import EXAMPLE_IMAGE, LOCATION_HEADER
from api.services import JsonBody, ServicesDep
from api.submitting import IdempotencyKeyHeader
from api.views import Links
from dispatcher.errors import RunFailed, TooManyWaits
from dispatcher.events import Event
from dispatcher.outputs import kind_named, truncated
from dispatcher.runs import Output, Run, RunStatus, new_run_id
from dispatcher.storage import OutputStore

router = APIRouter(prefix="/v1/api/workflow", tags=["compat: FlowAI"])

WAIT_SECONDS = operations.MAX_WAIT_SECONDS

# The body, read by api.body, documented by hand; its input is the workflow's. Examples name their workflow.
RUN_REQUEST_DOC: dict[str, Any] = {
    "requestBody": {
        "required": False,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "input": {
                            "type": "object",
                            "additionalProperties": True,
                            "description": "the workflow's named parameters (GET /v1/workflows/{id} lists them)",
                        },
                        "stream": {"type": "boolean", "default": False, "description": "answer with FlowAI's events"},
                    },
                    "additionalProperties": True,
                },
                "examples": {
                    "txt2img": {
                        "summary": "txt2img",
                        "value": {"input": {"prompt": "a lighthouse at dusk", "seed": 7}},
                    },
                    "img2img": {
                        "summary": "img2img: an input image and a prompt (both required)",
                        "value": {"input": {"image": EXAMPLE_IMAGE, "prompt": "the same scene in watercolor"}},
                    },
                },
            }
        },
    }
}
OUTPUT_ITEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "node": {"type": "string"},
        "url": {"type": "string"},
        "kind": {"enum": ["image", "video", "audio", "text", "file"]},
        "content_type": {"type": "string"},
        "size": {"type": "integer"},
        "text": {"type": "string", "description": "a text output's string"},
    },
    "required": ["node", "url", "kind", "content_type", "size"],
}
RESULT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "output": {
            "oneOf": [{"type": "array", "items": {"type": "string"}}, {"type": "string"}],
            "description": "the output URLs (none until it ends); a run whose every output is text: the text",
        },
        "outputs": {"type": "array", "items": OUTPUT_ITEM_SCHEMA, "description": "each output, with its kind"},
        "total_time": {"type": ["number", "null"], "description": "seconds since it was queued; null until it ends"},
        "run_id": {"type": "string"},
        "status": {"type": "string", "description": "on 202: queued or running"},
    },
    "required": ["output", "total_time", "run_id"],
}


def install(app: FastAPI) -> None:
    app.include_router(router)


@router.post(
    "/run/{workflow_id}",
    response_model=None,
    openapi_extra=RUN_REQUEST_DOC,
    responses={
        200: {
            "content": {"application/json": {"schema": RESULT_SCHEMA}, sse.MEDIA_TYPE: {}},
            "description": 'the outputs; with "stream": true, events',
        },
        202: {
            "content": {"application/json": {"schema": RESULT_SCHEMA}},
            "description": "the run did not end within the wait; it goes on: follow it at Location",
            "headers": LOCATION_HEADER,
        },
    },
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
    drawn = new_run_id()  # watched from before it is stored: no read before it waits (api.waits)
    with svc.waits.watching(drawn) as watch:
        accepted = await run_in_threadpool(
            submitting.submit, svc, who, workflow_id, body, idempotency_key=idempotency_key, run_id=drawn
        )
        links = Links.for_request(request, public_url=svc.settings.public_url, store=svc.store)
        if submitting.wants_stream(body):
            graph = svc.registry.get(accepted.run.workflow).graph
            class_types = {node_id: str(node.get("class_type", "")) for node_id, node in graph.items()}
            render = FlowAIStream(accepted.run, links, class_types)
            try:
                return events.stream_response(request, svc, accepted.run, render=render, headers=accepted.headers)
            except TooManyWaits:
                pass  # the run is stored: answered as still going (202), never with an error
        response.headers.update(accepted.headers)
        run = await operations.wait_submitted(svc, accepted, watch, WAIT_SECONDS, who)
    if not run.status.terminal:
        response.status_code = 202
        response.headers["Location"] = f"/v1/runs/{run.id}"
        return {"output": [], "total_time": None, "run_id": run.id, "status": run.status.value}
    if run.status is not RunStatus.SUCCEEDED:
        raise RunFailed.of(run.id, run.status.value, run.error)
    # Time as the caller lived it: queueing included, since FlowAI has no separate queue time.
    finished = run.finished_at if run.finished_at is not None else run.created_at
    urls = [links.output(run.id, o) for o in run.outputs]
    outputs = await run_in_threadpool(whole_texts, svc.store, run.outputs)
    return {
        "output": flowai_output(outputs, urls),
        "outputs": output_items(outputs, urls),
        "total_time": round(max(finished - run.created_at, 0.0), 3),
        "run_id": run.id,
    }


def whole_texts(store: OutputStore, outputs: Sequence[Output]) -> list[Output]:
    """``outputs`` with each text that the run record cut short read whole from the store: FlowAI's answer is
    the text itself, and a client has no sign that an inline text was only its start."""
    whole = []
    for output in outputs:
        if truncated(output.text, output.size):
            with store.open(output.key) as stream:
                output = dataclasses.replace(output, text=stream.read().decode("utf-8", "replace"))
        whole.append(output)
    return whole


def flowai_output(outputs: Sequence[Output], urls: Sequence[str]) -> str | list[str]:
    """FlowAI's ``output``: the text itself when every output is text (a FlowAI text workflow answers its text:
    several texts, one per line), else every output's URL."""
    texts = [o.text for o in outputs if o.text is not None]
    if outputs and len(texts) == len(outputs):
        return "\n".join(texts)
    return list(urls)


def output_items(outputs: Sequence[Output], urls: Sequence[str]) -> list[dict[str, Any]]:
    """Each output with its kind and content type (a text with its string): what ``output`` leaves out."""
    items = []
    for output, url in zip(outputs, urls, strict=True):
        item: dict[str, Any] = {
            "node": output.node,
            "url": url,
            "kind": kind_named(output.kind, output.content_type),
            "content_type": output.content_type,
            "size": output.size,
        }
        if output.text is not None:
            item["text"] = output.text
        items.append(item)
    return items


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
        self.outputs: list[Output] = []
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
            self.outputs.append(Output.from_dict(event.data))
            self.urls.append(sse.public_data(event, self.run.id, self.links)["url"])
            return b""
        if event.type == "done":
            total = now - (self.started if self.started is not None else self.run.created_at)
            data = {
                "output": flowai_output(self.outputs, self.urls),
                "outputs": output_items(self.outputs, self.urls),
                "total_time": round(max(total, 0.0), 3),
                "run_id": self.run.id,
            }
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
