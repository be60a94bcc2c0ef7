"""The aiohttp application: ComfyUI's HTTP and websocket routes (each also under ``/api``) and ``/fake/...``.

Request handling follows ComfyUI 0.3.64's ``server.py``: a body that is not JSON where JSON is expected
gets aiohttp's bare 500, as a real server's unhandled exception does.
"""

from __future__ import annotations

import json
import logging
import mimetypes
import os
import sys
import uuid

import aiohttp
from aiohttp import web

from dispatcher.fake_comfyui.control_routes import FAKE_ROUTES
from dispatcher.fake_comfyui.files import BadPath, resolve_view, store_upload
from dispatcher.fake_comfyui.graph import validate_prompt
from dispatcher.fake_comfyui.nodes import validate_load_image
from dispatcher.fake_comfyui.state import QueueItem
from dispatcher.fake_comfyui.web_helpers import Handler, NotJson, bare_500, json_object, state_of

log = logging.getLogger(__name__)

_FORCED_DOWNLOAD = {"text/html", "text/html-sandboxed", "application/xhtml+xml", "text/javascript", "text/css"}


# -- prompts and queue -----------------------------------------------------------------------------------------


async def post_prompt(request: web.Request) -> web.StreamResponse:
    state = state_of(request)
    state.stats.posted += 1
    if state.controls.reject_next > 0:
        state.controls.reject_next -= 1
        log.info("rejecting POST /prompt on request (%d more)", state.controls.reject_next)
        return bare_500()
    body = await json_object(request)
    try:
        number: int | float = float(body["number"]) if "number" in body else state.next_number(body.get("front"))
    except (TypeError, ValueError):
        return bare_500()
    if "prompt" not in body:
        error = {
            "type": "no_prompt",
            "message": "No prompt provided",
            "details": "No prompt provided",
            "extra_info": {},
        }
        return web.json_response({"error": error, "node_errors": {}}, status=400)
    prompt = body["prompt"]
    if not isinstance(prompt, dict) or not all(isinstance(node, dict) for node in prompt.values()):
        return bare_500()  # ComfyUI crashes on such a graph
    prompt_id = str(body.get("prompt_id", uuid.uuid4()))
    validation = validate_prompt(
        prompt,
        state.schemas(),
        partial_targets=body.get("partial_execution_targets"),
        validators={"LoadImage": validate_load_image(state.dirs)},
    )
    extra_data = body.get("extra_data", {})
    if not isinstance(extra_data, dict):
        return bare_500()
    if "client_id" in body:
        extra_data["client_id"] = body["client_id"]
    if not validation.ok:
        log.info("invalid prompt: %s", validation.error)
        return web.json_response({"error": validation.error, "node_errors": validation.node_errors}, status=400)
    state.queue.put(QueueItem(number, prompt_id, prompt, extra_data, validation.outputs))
    state.stats.queued += 1
    return web.json_response({"prompt_id": prompt_id, "number": number, "node_errors": validation.node_errors})


async def get_prompt(request: web.Request) -> web.StreamResponse:
    return web.json_response(state_of(request).queue_info())


async def get_queue(request: web.Request) -> web.StreamResponse:
    queue = state_of(request).queue
    return web.json_response(
        {"queue_running": [i.wire() for i in queue.running()], "queue_pending": [i.wire() for i in queue.pending()]}
    )


async def post_queue(request: web.Request) -> web.StreamResponse:
    body = await json_object(request)
    queue = state_of(request).queue
    if body.get("clear"):
        queue.wipe_queue()
    for prompt_id in body.get("delete", []):
        queue.delete_pending(prompt_id)
    return web.Response()


async def post_interrupt(request: web.Request) -> web.StreamResponse:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = {}
    prompt_id = body.get("prompt_id") if isinstance(body, dict) else None
    state_of(request).executor.interrupt(prompt_id or None)
    return web.Response()


async def get_history(request: web.Request) -> web.StreamResponse:
    query = request.rel_url.query
    try:
        max_items = int(query["max_items"]) if "max_items" in query else None
        offset = int(query["offset"]) if "offset" in query else -1
    except ValueError:
        return bare_500()
    return web.json_response(state_of(request).queue.get_history(max_items=max_items, offset=offset))


async def get_history_item(request: web.Request) -> web.StreamResponse:
    return web.json_response(state_of(request).queue.get_history(prompt_id=request.match_info["prompt_id"]))


async def post_history(request: web.Request) -> web.StreamResponse:
    body = await json_object(request)
    queue = state_of(request).queue
    if body.get("clear"):
        queue.wipe_history()
    for prompt_id in body.get("delete", []):
        queue.delete_history(prompt_id)
    return web.Response()


# -- files -------------------------------------------------------------------------------------------------------


async def view(request: web.Request) -> web.StreamResponse:
    state_of(request).stats.views += 1
    query = request.rel_url.query
    if "filename" not in query:
        return web.Response(status=404)
    try:
        path = resolve_view(state_of(request).dirs, query["filename"], query.get("subfolder"), query.get("type"))
    except BadPath as exc:
        return web.Response(status=exc.status)
    except FileNotFoundError:
        return web.Response(status=404)
    name = os.path.basename(path)
    content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
    if content_type in _FORCED_DOWNLOAD:
        content_type = "application/octet-stream"
    return web.FileResponse(path, headers={"Content-Disposition": f'filename="{name}"', "Content-Type": content_type})


async def upload_image(request: web.Request) -> web.StreamResponse:
    state = state_of(request)
    post = await request.post()
    image = post.get("image")
    if not isinstance(image, web.FileField) or not image.filename:
        return web.Response(status=400)
    kind = str(post.get("type") or "input")
    folder = state.dirs.by_type(kind)
    if folder is None:
        return bare_500()  # ComfyUI fails the same way on an unknown type
    subfolder = str(post.get("subfolder", ""))
    overwrite = str(post.get("overwrite")) in ("true", "1")
    try:
        name = store_upload(folder, image.filename, subfolder, image.file.read(), overwrite)
    except BadPath as exc:
        return web.Response(status=exc.status)
    state.stats.uploads.append(name)
    return web.json_response({"name": name, "subfolder": subfolder, "type": kind})


# -- information -------------------------------------------------------------------------------------------------


async def object_info(request: web.Request) -> web.StreamResponse:
    return web.json_response({name: schema.info() for name, schema in state_of(request).schemas().items()})


async def object_info_node(request: web.Request) -> web.StreamResponse:
    schema = state_of(request).schemas().get(request.match_info["node_class"])
    return web.json_response({} if schema is None else {schema.name: schema.info()})


def _memory() -> tuple[int, int]:
    try:
        page = os.sysconf("SC_PAGE_SIZE")
        return page * os.sysconf("SC_PHYS_PAGES"), page * os.sysconf("SC_AVPHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 25276502016, 24129036288  # the recorded machine


async def system_stats(request: web.Request) -> web.StreamResponse:
    config = state_of(request).config
    total, free = _memory()
    system = {
        "os": os.name,
        "ram_total": total,
        "ram_free": free,
        "comfyui_version": "0.3.64",
        "required_frontend_version": "1.27.10",
        "installed_templates_version": "0.1.95",
        "required_templates_version": "0.1.95",
        "python_version": sys.version,
        "pytorch_version": "2.13.0+cpu",
        "embedded_python": False,
        "argv": ["main.py", "--cpu", "--listen", config.host, "--port", str(config.port)],
    }
    device = {
        "name": "cpu",
        "type": "cpu",
        "index": None,
        "vram_total": total,
        "vram_free": free,
        "torch_vram_total": total,
        "torch_vram_free": free,
    }
    return web.json_response({"system": system, "devices": [device]})


async def models(request: web.Request) -> web.StreamResponse:
    return web.json_response(list(state_of(request).models))


async def models_in_folder(request: web.Request) -> web.StreamResponse:
    files = state_of(request).models.get(request.match_info["folder"])
    return web.Response(status=404) if files is None else web.json_response(list(files))


async def post_free(request: web.Request) -> web.StreamResponse:
    body = await json_object(request)
    # As ComfyUI's prompt worker: free_memory alone unloads the models too.
    if body.get("unload_models") or body.get("free_memory"):
        state_of(request).executor.request_unload()
    return web.Response()


async def features(request: web.Request) -> web.StreamResponse:
    return web.json_response({"supports_preview_metadata": True, "max_upload_size": web_max_upload()})


def web_max_upload() -> int:
    return 100 * 1024 * 1024  # ComfyUI's default --max-upload-size (MB)


async def websocket(request: web.Request) -> web.StreamResponse:
    state = state_of(request)
    # A short close timeout: on drop_ws or shutdown a client that never answers the close frame is cut off.
    ws = web.WebSocketResponse(timeout=1.0)
    await ws.prepare(request)
    sid = request.rel_url.query.get("clientId", "") or uuid.uuid4().hex
    state.hub.register(sid, ws)
    try:
        state.hub.send("status", {"status": state.queue_info(), "sid": sid}, sid)
        if state.hub.client_id == sid and state.hub.last_node_id is not None:
            state.hub.send("executing", {"node": state.hub.last_node_id}, sid)
        first = True
        async for message in ws:
            if message.type == aiohttp.WSMsgType.TEXT and first:
                try:
                    data = json.loads(message.data)
                except json.JSONDecodeError:
                    data = None
                if isinstance(data, dict) and data.get("type") == "feature_flags":
                    state.hub.send(
                        "feature_flags", {"supports_preview_metadata": True, "max_upload_size": web_max_upload()}, sid
                    )
            first = False
    finally:
        state.hub.unregister(sid, ws)
    return ws


COMFY_ROUTES: list[tuple[str, str, Handler]] = [
    ("GET", "/ws", websocket),
    ("POST", "/prompt", post_prompt),
    ("GET", "/prompt", get_prompt),
    ("GET", "/queue", get_queue),
    ("POST", "/queue", post_queue),
    ("POST", "/interrupt", post_interrupt),
    ("GET", "/history", get_history),
    ("GET", "/history/{prompt_id}", get_history_item),
    ("POST", "/history", post_history),
    ("GET", "/view", view),
    ("POST", "/upload/image", upload_image),
    ("GET", "/object_info", object_info),
    ("GET", "/object_info/{node_class}", object_info_node),
    ("GET", "/system_stats", system_stats),
    ("POST", "/free", post_free),
    ("GET", "/models", models),
    ("GET", "/models/{folder}", models_in_folder),
    ("GET", "/features", features),
]


@web.middleware
async def not_json_is_500(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except NotJson:
        if request.path.startswith("/fake/"):
            return web.json_response({"error": "body must be a JSON object"}, status=400)
        return bare_500()


def add_routes(app: web.Application) -> None:
    """ComfyUI's routes twice (bare and under ``/api``, as ComfyUI registers them) plus the ``/fake`` controls."""
    for method, path, handler in COMFY_ROUTES:
        app.router.add_route(method, "/api" + path, handler)
        app.router.add_route(method, path, handler)
    for method, path, handler in FAKE_ROUTES:
        app.router.add_route(method, path, handler)
