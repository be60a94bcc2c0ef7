"""Who is asking, and may they: the request's :class:`Principal` and the scope each route needs.

A request carries its API key as ``X-API-KEY: <key>`` or ``Authorization: Bearer <key>`` (every
route takes both, so each compatible product's client sends what it always sent), or, in either place,
an access token minted from a key (:mod:`dispatcher.tokens`, Comflowy's ``/auth/token``). No key, or an
unknown or revoked one, is a 401; a key without the route's scope a 403. With
``COMFY_DISPATCH_AUTH=disabled`` every request is :data:`ANONYMOUS`: the default tenant with every
scope (``api.app.serve`` allows that only on a loopback address).

Routes declare what they need with :data:`CanRead`, :data:`CanSubmit` or :data:`IsAdmin`; the
security schemes declared here are what /docs shows.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from api.services import Services, dependency_calls
from dispatcher import keys
from dispatcher.apikeys import KEY_RE, SCOPES, Principal, principal_of
from dispatcher.errors import ConfigError, Unauthorized
from dispatcher.settings import PREFIX, Settings
from dispatcher.tenants import DEFAULT_TENANT
from dispatcher.tokens import TOKEN_RE, principal_of_token, seconds_left

ANONYMOUS = Principal(tenant=DEFAULT_TENANT, scopes=frozenset(SCOPES), key_id="anonymous")
"""Everyone, when auth is disabled: the default tenant, every scope, one admission bucket."""

API_KEY_HEADER = APIKeyHeader(
    name="X-API-KEY",
    scheme_name="ApiKey",
    description="an API key from `comfy-dispatch keys create` (FlowAI's clients send it this way)",
    auto_error=False,
)
BEARER = HTTPBearer(
    scheme_name="Bearer",
    description="the API key as a bearer token, or an access token from /api/open/v0/auth/token (Comflowy's clients)",
    auto_error=False,
)

LOOPBACK_NAMES = frozenset({"localhost"})


def is_loopback(host: str) -> bool:
    """Whether ``host`` (what the API listens on) is a loopback address: 127.0.0.0/8, ::1 or localhost."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # any other name may resolve to a public address


def check_auth_binding(settings: Settings, host: str) -> None:
    """Raise ConfigError naming COMFY_DISPATCH_AUTH when auth is disabled on a non-loopback ``host``."""
    if settings.auth == "disabled" and not is_loopback(host):
        raise ConfigError(
            PREFIX + "AUTH",
            f"auth may be disabled only when the API listens on loopback (127.0.0.1, ::1, localhost), not on {host!r}",
        )


async def principal(svc: Services, api_key: str | None, bearer: HTTPAuthorizationCredentials | None) -> Principal:
    """The request's principal from its API key (``X-API-KEY``, or ``bearer``); raises Unauthorized (401) without
    a valid one."""
    if svc.settings.auth == "disabled":
        return ANONYMOUS
    key = api_key or (bearer.credentials if bearer is not None else None)
    if not key:
        raise Unauthorized("an API key is required: send X-API-KEY: <key> or Authorization: Bearer <key>")
    key = key.strip()
    found = svc.key_cache.get(key)
    if found is None:
        generation = svc.key_cache.generation
        found, lifetime = await _look_up(svc, key)
        if found is not None:
            svc.key_cache.put(key, found, generation, lifetime=lifetime)
    if found is None:
        raise Unauthorized("the API key or access token is unknown, expired or revoked")
    return found


async def _look_up(svc: Services, credential: str) -> tuple[Principal | None, float | None]:
    """Whom an API key or access token stands for, and for how long at most (None: until revoked)."""
    # Reads on the event loop's own client: no thread hop on the path of every request.
    aio = svc.conns.aio
    if (match := KEY_RE.match(credential)) is not None:
        record: dict[str, str] = await aio.hgetall(keys.api_key(match.group(1)))  # type: ignore[assignment]
        return principal_of(credential, record), None
    if (match := TOKEN_RE.match(credential)) is not None:
        token: dict[str, str] = await aio.hgetall(keys.access_token(match.group(1)))  # type: ignore[assignment]
        if not token.get("key_id"):
            return None, None
        key: dict[str, str] = await aio.hgetall(keys.api_key(token["key_id"]))  # type: ignore[assignment]
        now = time.time()
        return principal_of_token(credential, token, key, now=now), seconds_left(token, now=now)
    return None, None


def needs(scope: str) -> Callable[[Request], Awaitable[Principal]]:
    """A dependency giving the request's principal once it holds ``scope`` (Forbidden, 403, otherwise).

    One dependency, which reads the services and both headers itself (with FastAPI's own security classes):
    FastAPI solves each sub-dependency anew on every request, and on a light route (an output's bytes) that was
    half of its CPU. The security schemes it would have documented, :func:`document` adds."""
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}")

    async def dependency(request: Request) -> Principal:  # async, no I/O on a known key: no thread hop
        svc: Services = request.app.state.services
        who = await principal(svc, await API_KEY_HEADER(request), await BEARER(request))
        who.require(scope)
        return who

    dependency.__name__ = f"needs_{scope}"
    _GUARDS.add(dependency)
    return dependency


_GUARDS: set[Callable[..., Any]] = set()  # the dependencies needs() made: their routes need an API key
SECURITY: list[dict[str, list[str]]] = [{API_KEY_HEADER.scheme_name: []}, {BEARER.scheme_name: []}]


def document(app: FastAPI) -> None:
    """Say in the OpenAPI document what :func:`needs` checks: the two security schemes, and every operation that
    needs an API key."""
    schemes = {
        scheme.scheme_name: jsonable_encoder(scheme.model, by_alias=True, exclude_none=True)
        for scheme in (API_KEY_HEADER, BEARER)
    }
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            guarded = {
                (context.path_format, method.lower())
                for context in iter_route_contexts(app.routes)  # included routers' routes too
                # the context's dependant: with a router's own dependencies, as included
                if isinstance(route := context.original_route, APIRoute)
                and not _GUARDS.isdisjoint(dependency_calls(context.dependant))
                for method in route.methods or ()
            }
            for path, operations in schema.get("paths", {}).items():
                for method, operation in operations.items():
                    if (path, method) in guarded:
                        operation["security"] = [dict(requirement) for requirement in SECURITY]
            schema.setdefault("components", {}).setdefault("securitySchemes", {}).update(schemes)
        return app.openapi_schema or build()

    app.openapi = openapi  # type: ignore[method-assign]


require_read = needs("read")
require_submit = needs("submit")

CanRead = Annotated[Principal, Depends(require_read)]
"""A principal with the ``read`` scope: GET of workflows, runs, outputs."""

CanSubmit = Annotated[Principal, Depends(require_submit)]
"""A principal with the ``submit`` scope: creating (and canceling) runs."""

IsAdmin = Annotated[Principal, Depends(needs("admin"))]
"""A principal with the ``admin`` scope: the queues and the workers."""
