"""The two requests on every run's path, served without FastAPI's per-request machinery: a run's submission
(``POST /v1/workflows/{id}/runs``, with or without ``?wait=``) and an output's bytes (``GET
/v1/runs/{id}/outputs/{filename}``).

FastAPI solves a route's dependencies and parameters anew on every request, and validates what the route
returns against its model before it serializes it. On these two routes that was more CPU than the routes' own
work: side by side in one process, a submission (its Redis work stubbed out) took 2 to 3 times the CPU through
FastAPI's route, and an output's bytes 3 times. Both are on the path of every run, while a client waits.

Each is a route placed before FastAPI's own. It takes a request only in its plain form, and then does what the
documented route does, in the same order, with the same code: the body reader, the auth dependency, the
endpoint function, and the app's exception handlers (problem+json) around it. The run view is serialized as
FastAPI serializes the route's response model. Anything else goes to the documented route, which validates it:
another query parameter or a ``wait`` in another form, an ``Idempotency-Key``, another method. ``/docs`` and
``/openapi.json`` describe the documented routes; tests check both ways answer alike.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Response
from fastapi.routing import APIRoute, iter_route_contexts
from pydantic import TypeAdapter
from starlette._utils import get_route_path  # how Starlette's own routes find the path under a root path
from starlette.datastructures import URLPath
from starlette.requests import Request
from starlette.routing import BaseRoute, Match, NoMatchFound, compile_path
from starlette.types import Receive, Scope, Send

from api import auth
from api.models import RunView
from api.operations import MAX_WAIT_SECONDS
from api.routes import outputs, runs
from api.services import Services, dependency_calls, get_services, json_object_body
from dispatcher import idempotency

log = logging.getLogger(__name__)

SUBMIT_PATH = "/v1/workflows/{workflow_id}/runs"
OUTPUT_PATH = "/v1/runs/{run_id}/outputs/{filename}"
# ?wait= as clients write it (seconds, maybe with a fraction); any other form is the documented route's to judge.
PLAIN_WAIT = re.compile(rb"wait=([0-9]{1,3}(?:\.[0-9]{1,6})?)")
IDEMPOTENCY_HEADER = idempotency.HEADER.lower().encode("latin-1")
VIEW = TypeAdapter(RunView)


class HotPath(BaseRoute):
    """One method and path template, answered by ``answer`` for the requests ``plain`` accepts."""

    def __init__(
        self,
        method: str,
        documented: APIRoute,
        plain: Callable[[Scope], dict[str, Any] | None],
        answer: Callable[[Request], Awaitable[Response]],
    ) -> None:
        self.method = method
        self.documented = documented
        # The documented route's path and name: what FastAPI's router reads off a route (telemetry's http.route).
        self.path, self.name = documented.path, documented.name
        self.path_regex, self.path_format, _ = compile_path(documented.path)
        self.plain = plain
        self.answer = answer

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] != "http" or scope["method"] != self.method:
            return Match.NONE, {}
        if scope["app"].dependency_overrides:  # a test replaced a dependency: the documented route honours that
            return Match.NONE, {}
        found = self.path_regex.match(get_route_path(scope))
        extra = self.plain(scope) if found is not None else None
        if found is None or extra is None:
            return Match.NONE, {}
        # The documented route as the request's route: what reads it (problems' counting of refused runs) sees
        # the same route either way.
        child = {"endpoint": self.documented.endpoint, "route": self.documented, "path_params": found.groupdict()}
        return Match.FULL, child | extra

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await self.answer(Request(scope, receive, send))
        await response(scope, receive, send)

    def url_path_for(self, name: str, /, **path_params: Any) -> URLPath:
        raise NoMatchFound(name, path_params)  # the documented route, after this one, builds its URLs


def _plain_submission(scope: Scope) -> dict[str, Any] | None:
    query: bytes = scope["query_string"]
    wait = 0.0
    if query:
        plain = PLAIN_WAIT.fullmatch(query)
        if plain is None or float(plain[1]) > MAX_WAIT_SECONDS:
            return None
        wait = float(plain[1])
    if any(name == IDEMPOTENCY_HEADER for name, _ in scope["headers"]):  # checked and kept by the documented route
        return None
    return {"comfy_dispatch.wait": wait}


async def _submit(request: Request) -> Response:
    # In the order FastAPI solves the documented route's parameters: the body, the services, the principal.
    body = await json_object_body(request)
    svc: Services = request.app.state.services
    who = await auth.require_submit(request)
    sub = Response()  # what FastAPI hands the endpoint to set a status and headers on
    del sub.headers["content-length"]
    sub.status_code = None  # type: ignore[assignment]
    wait: float = request.scope["comfy_dispatch.wait"]
    result = await runs.create_run(request.path_params["workflow_id"], request, sub, body, svc, who, wait=wait)
    if isinstance(result, Response):  # a stream of the run's events
        return result
    # As FastAPI answers a route's response model: its own status unless the endpoint set one, JSON from the model.
    status = sub.status_code or request.scope["route"].status_code
    response = Response(VIEW.dump_json(result, by_alias=True), status_code=status, media_type="application/json")
    response.headers.raw.extend(sub.headers.raw)
    return response


async def _output(request: Request) -> Response:
    svc: Services = request.app.state.services
    who = await auth.require_read(request)
    return await outputs.get_output(request.path_params["run_id"], request.path_params["filename"], svc, who)


# What each documented route depends on: the hot path does the same. A dependency added to the route (by its
# router or the app) would be skipped: then the route is left to FastAPI (with a warning at start-up).
SUBMIT_NEEDS = frozenset({json_object_body, get_services, auth.require_submit})
OUTPUT_NEEDS = frozenset({get_services, auth.require_read})


def install(app: FastAPI) -> None:
    """Put the hot paths in front of ``app``'s routes (once the documented ones are in)."""
    documented = {
        (context.path_format, method): (route, dependency_calls(context.dependant))
        for context in iter_route_contexts(app.routes)
        if isinstance(route := context.original_route, APIRoute)
        for method in route.methods or ()
    }
    hot: list[BaseRoute] = []
    for method, path, needs, plain, answer in (
        ("POST", SUBMIT_PATH, SUBMIT_NEEDS, _plain_submission, _submit),
        ("GET", OUTPUT_PATH, OUTPUT_NEEDS, _any, _output),
    ):
        route, found = documented[path, method]
        if found != needs:
            log.warning("%s %s is served by FastAPI alone: its dependencies are not the hot path's", method, path)
            continue
        hot.append(HotPath(method, route, plain, answer))
    app.router.routes[:0] = hot


def _any(scope: Scope) -> dict[str, Any]:
    return {}  # the documented route has no parameter but its path's
