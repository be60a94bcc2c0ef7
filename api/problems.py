"""The one place where errors become HTTP responses: RFC 9457 ``application/problem+json``.

Every error a request can meet ends here: our :class:`DispatchError` hierarchy, Starlette's
404/405, FastAPI's request validation, Redis being unreachable, and, as a last resort, a bug.
Routes raise; they never build error responses nor catch ``Exception``.

Compatibility routes keep their products' error members through *flavors*: a flavor adds
extension members (``"error"``, ``"success": false``...) to every problem under a path prefix,
so a seed client reading its usual field keeps working while the body stays a valid problem.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import compile_path

from api.services import dependency_calls, json_object_body
from dispatcher import metrics
from dispatcher.errors import (
    BadRequest,
    BatchNotFound,
    Conflict,
    DispatchError,
    Forbidden,
    ManifestError,
    NoCapableWorker,
    NotAvailableYet,
    OutputNotFound,
    ParameterError,
    PayloadTooLarge,
    QueueFull,
    RateLimited,
    RunFailed,
    RunNotDone,
    RunNotFound,
    RunRejected,
    RunWasCanceled,
    StorageError,
    TooManyWaits,
    Unauthorized,
    WorkflowNotFound,
    WorkflowRetired,
)
from dispatcher.ratelimit import ceil_seconds

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
TYPE_PREFIX = "urn:comfy-dispatch:problem:"

Flavor = Callable[[int, str], dict[str, Any]]
"""Extension members a compatibility API adds to its problems, from (status, detail)."""


# A lone UTF-16 surrogate cannot be encoded as UTF-8 (api.body refuses them in bodies, but a detail may echo one).
_SURROGATE = re.compile("[\ud800-\udfff]")


class ProblemResponse(JSONResponse):
    media_type = PROBLEM_JSON

    def render(self, content: Any) -> bytes:
        # As JSONResponse renders, but an error answer must never fail in turn: a value it echoes that holds
        # a lone surrogate is shown with U+FFFD in its place.
        text = json.dumps(content, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":"))
        try:
            return text.encode("utf-8")
        except UnicodeEncodeError:
            return _SURROGATE.sub("\N{REPLACEMENT CHARACTER}", text).encode("utf-8")


# How problems look in /docs. Written out (not a model) because FastAPI would file a model's
# schema under application/json, and our problems are application/problem+json.
PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "title": "Problem",
    "description": "RFC 9457 problem details; compatibility routes add their products' error members",
    "properties": {
        "type": {"type": "string", "example": TYPE_PREFIX + "invalid-parameter"},
        "title": {"type": "string", "example": "Invalid parameter"},
        "status": {"type": "integer", "example": 422},
        "detail": {"type": "string", "example": "steps: must be <= 150"},
        "instance": {"type": "string", "example": "/v1/workflows/txt2img/runs"},
        "errors": {
            "type": "array",
            "description": "on 422: each bad parameter",
            "items": {
                "type": "object",
                "properties": {"param": {"type": "string"}, "detail": {"type": "string"}},
            },
        },
    },
    "required": ["type", "title", "status", "detail", "instance"],
}


RETRY_AFTER = {"description": "seconds to wait before trying again", "schema": {"type": "integer", "minimum": 1}}


def openapi_responses() -> dict[int | str, dict[str, Any]]:
    """The error responses every route may give, for /docs (422 replaces FastAPI's own validation shape)."""
    content = {PROBLEM_JSON: {"schema": PROBLEM_SCHEMA}}
    return {
        422: {"description": "a parameter is invalid (named in detail and errors)", "content": content},
        429: {
            "description": "over the key's submission rate, the tenant's queue limit or its waiting requests",
            "content": content,
            "headers": {"Retry-After": {**RETRY_AFTER, "required": True}},
        },
        "4XX": {"description": "the request cannot be served (problem details)", "content": content},
        503: {
            "description": "Redis, the output store or the workers cannot serve it now (Retry-After when known)",
            "content": content,
            "headers": {"Retry-After": RETRY_AFTER},
        },
        "5XX": {"description": "the service cannot serve it now (problem details)", "content": content},
    }


@dataclass(frozen=True)
class Kind:
    """How one error class is presented: HTTP status, problem type slug and title."""

    status: int
    slug: str
    title: str

    @property
    def type(self) -> str:
        return TYPE_PREFIX + self.slug


# Looked up along the exception's MRO, so a subclass (PayloadTooLarge) wins over its base (BadRequest).
KINDS: dict[type[DispatchError], Kind] = {
    WorkflowNotFound: Kind(404, "workflow-not-found", "Workflow not found"),
    WorkflowRetired: Kind(410, "workflow-retired", "Workflow retired"),
    ManifestError: Kind(422, "invalid-workflow", "Invalid workflow"),
    RunNotFound: Kind(404, "run-not-found", "Run not found"),
    BatchNotFound: Kind(404, "batch-not-found", "Batch not found"),
    NoCapableWorker: Kind(422, "no-capable-worker", "No worker can run this"),
    OutputNotFound: Kind(404, "output-not-found", "Output not found"),
    ParameterError: Kind(422, "invalid-parameter", "Invalid parameter"),
    PayloadTooLarge: Kind(413, "payload-too-large", "Request body too large"),
    BadRequest: Kind(400, "malformed-request", "Malformed request"),
    RunFailed: Kind(502, "run-failed", "Run failed"),
    RunRejected: Kind(422, "run-rejected", "The run failed on what was asked"),
    RunNotDone: Kind(503, "run-not-done", "The run could not be done for now"),
    RunWasCanceled: Kind(409, "run-canceled", "The run was canceled"),
    NotAvailableYet: Kind(501, "not-available-yet", "Not available yet"),
    StorageError: Kind(503, "storage-unavailable", "Output storage unavailable"),
    Unauthorized: Kind(401, "unauthorized", "Unauthorized"),
    Forbidden: Kind(403, "forbidden", "Forbidden"),
    RateLimited: Kind(429, "rate-limited", "Too many requests"),
    QueueFull: Kind(429, "queue-full", "Too many queued runs"),
    TooManyWaits: Kind(429, "too-many-waits", "Too many requests waiting for runs"),
    Conflict: Kind(409, "conflict", "Conflict with the resource's state"),
}
UNEXPECTED = Kind(500, "internal-error", "Internal error")

# The ``reason`` of ``runs_rejected_total`` for a refused submission, looked up along the MRO like KINDS.
REJECT_REASONS: dict[type[DispatchError], str] = {
    QueueFull: "queue_full",
    RateLimited: "rate_limit",
    ParameterError: "validation",
    PayloadTooLarge: "too_large",
    BadRequest: "validation",
    Unauthorized: "auth",
    Forbidden: "auth",
    WorkflowNotFound: "not_found",
    RunNotFound: "not_found",
    Conflict: "conflict",
}


def kind_of(exc: DispatchError) -> Kind:
    for cls in type(exc).__mro__:
        kind = KINDS.get(cls)
        if kind is not None:
            return kind
    return UNEXPECTED


def count_rejection(request: Request, exc: Exception) -> None:
    """Count a refused run submission; errors of other routes (a read, a cancel) are not rejected runs."""
    if not _submits_runs(request):
        return
    if isinstance(exc, RequestValidationError):
        metrics.RUNS_REJECTED.labels("validation").inc()
        return
    for cls in type(exc).__mro__:
        reason = REJECT_REASONS.get(cls)
        if reason is not None:
            metrics.RUNS_REJECTED.labels(reason).inc()
            return


def _submits_runs(request: Request) -> bool:
    # The run routes, native and compat alike, and only they, take their body through json_object_body.
    dependant = getattr(request.scope.get("route"), "dependant", None)
    return dependant is not None and json_object_body in dependency_calls(dependant)


def extensions_of(exc: DispatchError) -> dict[str, Any]:
    """Extension members that carry an error's data (the bad parameter, the failed run...)."""
    if isinstance(exc, ParameterError):
        return {"errors": [{"param": exc.param, "detail": exc.detail}]}
    if isinstance(exc, ManifestError):
        return {"errors": [{"param": exc.path, "detail": exc.detail}]}
    if isinstance(exc, PayloadTooLarge):
        return {"max_body_bytes": exc.limit}
    if isinstance(exc, RunFailed):
        return {"run_id": exc.run_id, "run_status": exc.status, "run_error": exc.error}
    if isinstance(exc, Forbidden):
        return {"required_scope": exc.scope}
    if isinstance(exc, QueueFull):
        return {"tenant": exc.tenant, "max_queued": exc.max_queued, "retry_after": retry_after(exc)}
    if isinstance(exc, RateLimited):
        return {"retry_after": retry_after(exc)}
    if isinstance(exc, NoCapableWorker):
        return {"missing": [{"name": name, "folder": folder or None} for name, folder in exc.missing]}
    return {}


def retry_after(exc: RateLimited) -> int:
    """Whole seconds to wait before trying again: at least 1."""
    return max(1, ceil_seconds(exc.retry_after))


def headers_of(exc: DispatchError) -> dict[str, str]:
    """Response headers an error needs: the auth challenge of a 401, the RateLimit fields of a 429."""
    if isinstance(exc, Unauthorized):
        return {"WWW-Authenticate": "Bearer"}
    if isinstance(exc, RateLimited):
        return {**exc.headers, "Retry-After": str(retry_after(exc))}
    if isinstance(exc, RunNotDone):
        return {"Retry-After": str(RunNotDone.RETRY_AFTER_SECONDS)}
    return {}


def add_flavor(app: FastAPI, prefix: str, flavor: Flavor) -> None:
    """Give every problem under ``prefix`` the extension members ``flavor`` returns (longest prefix wins)."""
    flavors: list[tuple[str, Flavor]] = getattr(app.state, "problem_flavors", [])
    flavors.append((prefix, flavor))
    flavors.sort(key=lambda item: len(item[0]), reverse=True)
    app.state.problem_flavors = flavors


def _route_path(request: Request) -> str:
    path = request.url.path
    root = str(request.scope.get("root_path") or "")
    return path[len(root) :] if root and path.startswith(root) else path


def problem(
    request: Request,
    *,
    status: int,
    title: str,
    detail: str,
    type_: str = "about:blank",
    extensions: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> ProblemResponse:
    """Build a problem response; standard members always win over extensions of the same name."""
    path = _route_path(request)
    body: dict[str, Any] = {}
    for prefix, flavor in getattr(request.app.state, "problem_flavors", []):
        if path.startswith(prefix):
            body.update(flavor(status, detail))
            break
    body.update(extensions or {})
    body.update({"type": type_, "title": title, "status": status, "detail": detail, "instance": request.url.path})
    return ProblemResponse(body, status_code=status, headers=dict(headers or {}))


def problem_of(exc: DispatchError, *, instance: str) -> dict[str, Any]:
    """The problem+json object of ``exc`` on its own (a batch item's), as :func:`dispatch_error` would answer it."""
    kind = kind_of(exc)
    return {
        **extensions_of(exc),
        "type": kind.type,
        "title": kind.title,
        "status": kind.status,
        "detail": _SURROGATE.sub("\N{REPLACEMENT CHARACTER}", str(exc)),
        "instance": instance,
    }


async def dispatch_error(request: Request, exc: Exception) -> ProblemResponse:
    assert isinstance(exc, DispatchError)
    count_rejection(request, exc)
    kind = kind_of(exc)
    if kind is UNEXPECTED:
        log.error("%s %s: unmapped %s", request.method, request.url.path, type(exc).__name__, exc_info=exc)
    elif kind.status == 503:
        log.error("%s %s: %s", request.method, request.url.path, exc)
    else:
        # The client's mistake, or a run's own outcome (failed, still going): worth a line, not an alarm.
        log.info("%s %s: %d %s", request.method, request.url.path, kind.status, exc)
    return problem(
        request,
        status=kind.status,
        title=kind.title,
        detail=str(exc),
        type_=kind.type,
        extensions=extensions_of(exc),
        headers=headers_of(exc),
    )


async def http_error(request: Request, exc: Exception) -> ProblemResponse:
    """Starlette's own errors: unknown route (404), wrong method (405), and any HTTPException."""
    assert isinstance(exc, StarletteHTTPException)
    phrase = HTTPStatus(exc.status_code).phrase
    detail = str(exc.detail)
    if detail == phrase and exc.status_code == 404:
        detail = f"nothing is served at {request.url.path}"
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        # Starlette's Allow names the methods of the first route at the path only (/api/open/v0/check has two).
        headers["Allow"] = allowed_methods(request, headers.get("Allow", ""))
        if detail == phrase:
            detail = f"{request.method} is not allowed on {request.url.path}; allowed: {headers['Allow']}"
    return problem(request, status=exc.status_code, title=phrase, detail=detail, headers=headers)


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"})


def allowed_methods(request: Request, allow: str) -> str:
    """The methods served at the request's path, as an ``Allow`` value: those in ``allow`` (what the route that
    refused the method serves) and every one the API's document lists at that path (its other routes')."""
    methods = {method.strip() for method in allow.split(",") if method.strip()}
    path = _route_path(request)
    for template, item in request.app.openapi().get("paths", {}).items():
        if compile_path(template)[0].match(path):
            methods |= {method.upper() for method in item} & _METHODS
    return ", ".join(sorted(methods))


async def validation_error(request: Request, exc: Exception) -> ProblemResponse:
    """FastAPI's validation of query and path parameters, reported like our own ParameterError."""
    assert isinstance(exc, RequestValidationError)
    count_rejection(request, exc)
    errors = [
        {"param": _param_name(err.get("loc", ())), "detail": str(err.get("msg", "is invalid"))} for err in exc.errors()
    ]
    detail = "; ".join(f"{e['param']}: {e['detail']}" for e in errors) or "request parameters are invalid"
    kind = KINDS[ParameterError]
    return problem(request, status=422, title=kind.title, detail=detail, type_=kind.type, extensions={"errors": errors})


def _param_name(loc: Any) -> str:
    parts = [str(part) for part in loc]
    # The first element says where the parameter was (query, path, body...); clients know it by name alone.
    if len(parts) > 1 and parts[0] in ("query", "path", "header", "cookie", "body"):
        parts = parts[1:]
    return ".".join(parts) or "request"


async def redis_unavailable(request: Request, exc: Exception) -> ProblemResponse:
    log.error("%s %s: Redis unavailable: %s", request.method, request.url.path, exc)
    return problem(
        request,
        status=503,
        title="Service unavailable",
        detail="the queue store (Redis) does not answer; try again shortly",
        type_=TYPE_PREFIX + "redis-unavailable",
        headers={"Retry-After": "5"},
    )


async def unexpected_error(request: Request, exc: Exception) -> ProblemResponse:
    # Reached only through a bug: say nothing about internals to the client, everything to the log.
    log.exception("%s %s: unexpected error", request.method, request.url.path, exc_info=exc)
    return problem(
        request,
        status=500,
        title=UNEXPECTED.title,
        detail="an unexpected error occurred; it has been logged",
        type_=UNEXPECTED.type,
    )


def install(app: FastAPI) -> None:
    """Register every error handler of the API on ``app``."""
    app.add_exception_handler(DispatchError, dispatch_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(RedisConnectionError, redis_unavailable)
    app.add_exception_handler(RedisTimeoutError, redis_unavailable)
    app.add_exception_handler(Exception, unexpected_error)
