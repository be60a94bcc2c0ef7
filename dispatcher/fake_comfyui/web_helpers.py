"""Small request/response helpers shared by the fake's route modules."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from dispatcher.fake_comfyui.runtime import STATE, FakeState

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class NotJson(Exception):
    """Raised when a request body is not the JSON object a route needs."""


async def json_object(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise NotJson() from exc
    if not isinstance(body, dict):
        raise NotJson()
    return body


def state_of(request: web.Request) -> FakeState:
    return request.app[STATE]


def bare_500() -> web.Response:
    """What aiohttp answers when a handler raises (ComfyUI does not catch bad JSON)."""
    response = web.Response(status=500, text="500 Internal Server Error\n\nServer got itself in trouble")
    response.force_close()
    return response
