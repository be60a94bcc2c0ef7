"""The fake's own routes under ``/fake/``: counters, fault controls, reset (not part of ComfyUI)."""

from __future__ import annotations

import logging

from aiohttp import web

from dispatcher.fake_comfyui.web_helpers import Handler, json_object, state_of

log = logging.getLogger(__name__)


async def fake_stats(request: web.Request) -> web.StreamResponse:
    state = state_of(request)
    return web.json_response({**state.stats.as_json(), "loaded_model": state.memory.loaded})


async def fake_control(request: web.Request) -> web.StreamResponse:
    state = state_of(request)
    try:
        state.controls.update(await json_object(request))
    except ValueError as exc:
        return web.json_response({"error": str(exc)}, status=400)
    log.info("controls now %s", state.controls.as_json())
    return web.json_response(state.controls.as_json())


async def fake_reset(request: web.Request) -> web.StreamResponse:
    state_of(request).reset()
    return web.json_response({"ok": True})


FAKE_ROUTES: list[tuple[str, str, Handler]] = [
    ("GET", "/fake/stats", fake_stats),
    ("POST", "/fake/control", fake_control),
    ("POST", "/fake/reset", fake_reset),
]
