"""Input images on the worker: fetched from a local HTTP server or read from uploads, uploaded to a fake ComfyUI."""

from __future__ import annotations

import base64
import http.server
import io
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from PIL import Image

from dispatcher import keys
from dispatcher.errors import ComfyUIError
from dispatcher.inputs import MARK, DataImage
from dispatcher.redis_server import free_port
from dispatcher.runs import Run, RunStatus
from dispatcher.submit import Submitter
from dispatcher.uploads import Uploads
from dispatcher.workflows import Registry
from tests.integration.conftest import ContextFactory
from tests.integration.test_runner import execute, final, redispatch
from tests.support import FakeComfy
from worker.context import WorkerContext

pytestmark = pytest.mark.redis

LIMIT = 64 * 1024


def png(color: tuple[int, int, int] = (0, 0, 255), side: int = 16) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (side, side), color).save(buffer, format="PNG")
    return buffer.getvalue()


PNG = png()
ROUTES: dict[str, tuple[int, str, bytes]] = {
    "/cat.png": (200, "image/png", PNG),
    "/cat": (200, "application/octet-stream", PNG),
    "/big.png": (200, "image/png", PNG + b"\0" * LIMIT),
    "/page.html": (200, "text/html; charset=utf-8", PNG),
    "/notes.png": (200, "image/png", b"not an image at all"),
    "/missing.png": (404, "text/plain", b"no"),
    "/broken.png": (503, "text/plain", b"try later"),
    "/busy.png": (429, "text/plain", b"slow down"),
}


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
        if self.path == "/moved":
            self.send_response(302)
            self.send_header("Location", "/cat.png")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        status, content_type, body = ROUTES.get(self.path, (404, "text/plain", b"no"))
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def images() -> Iterator[str]:
    """A real HTTP server on loopback serving ROUTES; yields its base URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def ctx(worker_context: ContextFactory) -> WorkerContext:
    return worker_context({"COMFY_DISPATCH_CALLBACK_ALLOW": "loopback"}, input_max_bytes=LIMIT)


def run_with(ctx: WorkerContext, image: str, **params: Any) -> Run:
    """Queue and dispatch an img2img run (the API's own checks are not in the way: the worker must hold alone)."""
    body = {"params": {"prompt": "a cat", "denoise": 0.5, "image": image, **params}}
    run = Submitter(ctx.conns.text, Registry.load(ctx.settings.workflows_dir), ctx.settings).submit("img2img", body)
    redispatch(ctx)
    return final(ctx, run.id)


def posted_graph(fake: FakeComfy, run: Run) -> dict[str, Any]:
    entry = requests.get(f"{fake.url}/history/{run.prompt_id}", timeout=5).json()[run.prompt_id]
    graph: dict[str, Any] = entry["prompt"][2]
    return graph


@pytest.mark.parametrize("path", ["/cat.png", "/cat", "/moved"], ids=["png", "octet-stream", "redirect"])
def test_a_url_image_is_fetched_uploaded_and_bound(
    ctx: WorkerContext, fake_comfyui: FakeComfy, images: str, path: str
) -> None:
    run = run_with(ctx, images + path)
    assert execute(ctx, run.id) == "succeeded", final(ctx, run.id).error
    name = f"cd_{run.id}_image.png"
    assert fake_comfyui.stats()["uploads"] == [name]
    assert (fake_comfyui.data_dir / "input" / "comfy-dispatch" / name).read_bytes() == PNG
    node = posted_graph(fake_comfyui, run)["10"]
    assert node["inputs"]["image"] == f"comfy-dispatch/{name}" and MARK not in node.get("_meta", {})
    (output,) = final(ctx, run.id).outputs
    with ctx.store.open(output.key) as fh:
        assert fh.read().startswith(b"\x89PNG")
    assert ctx.runs.graph(run.id)["10"]["inputs"]["image"] == images + path  # the stored graph is left as bound


def test_an_upload_is_read_from_the_store_of_its_tenant(ctx: WorkerContext, fake_comfyui: FakeComfy) -> None:
    jpeg = io.BytesIO()
    Image.new("RGB", (8, 8), (9, 9, 9)).save(jpeg, format="JPEG")
    upload = Uploads(ctx.conns.text, ctx.store).put("default", DataImage(jpeg.getvalue(), "image/jpeg"), "a.jpg")
    run = run_with(ctx, f"upload:{upload.id}")
    assert execute(ctx, run.id) == "succeeded", final(ctx, run.id).error
    assert fake_comfyui.stats()["uploads"] == [f"cd_{run.id}_image.jpg"]


def test_base64_bound_by_submit_is_found_once_the_api_stored_it(ctx: WorkerContext, fake_comfyui: FakeComfy) -> None:
    Uploads(ctx.conns.text, ctx.store).put("default", DataImage(PNG, "image/png"))
    run = run_with(ctx, base64.b64encode(PNG).decode())
    assert execute(ctx, run.id) == "succeeded", final(ctx, run.id).error


@pytest.mark.parametrize(
    ("image", "message"),
    [
        ("/missing.png", "answered HTTP 404"),
        ("/big.png", f"more than the limit of {LIMIT}"),
        ("/page.html", "serves text/html, not an image"),
        ("/notes.png", "is not a PNG, JPEG, WebP or GIF image"),
        ("http://10.255.255.1/cat.png", "not a public address"),
        ("upload:" + "0" * 32, "does not exist or has expired"),
    ],
)
def test_an_input_that_cannot_be_used_fails_the_run_at_once_naming_the_parameter(
    ctx: WorkerContext, fake_comfyui: FakeComfy, images: str, image: str, message: str
) -> None:
    run = run_with(ctx, images + image if image.startswith("/") else image)
    assert execute(ctx, run.id) == "failed"
    done = final(ctx, run.id)
    assert done.status is RunStatus.FAILED and done.attempts == 1 and done.error is not None
    assert done.error["type"] == "input_error" and done.error["param"] == "image"
    assert done.error["message"].startswith("image: ") and message in done.error["message"]
    assert fake_comfyui.stats()["posted"] == 0 and fake_comfyui.stats()["uploads"] == []


def test_an_expired_upload_fails_the_run(ctx: WorkerContext, fake_comfyui: FakeComfy) -> None:
    upload = Uploads(ctx.conns.text, ctx.store).put("default", DataImage(PNG, "image/png"))
    run = run_with(ctx, f"upload:{upload.id}")
    ctx.conns.text.delete(keys.upload("default", upload.id))
    assert execute(ctx, run.id) == "failed"
    assert "has expired" in str((final(ctx, run.id).error or {})["message"])


@pytest.mark.parametrize("image", ["/broken.png", "/busy.png", "closed-port"])
def test_a_source_that_fails_for_now_is_retried(
    ctx: WorkerContext, fake_comfyui: FakeComfy, images: str, image: str
) -> None:
    url = f"http://127.0.0.1:{free_port()}/cat.png" if image == "closed-port" else images + image
    run = run_with(ctx, url)
    assert execute(ctx, run.id) == "retrying"
    queued = final(ctx, run.id)
    assert queued.status is RunStatus.QUEUED and queued.attempts == 1 and queued.error is not None
    assert queued.error["type"] == "input_error" and queued.error["param"] == "image"
    assert fake_comfyui.stats()["posted"] == 0


def test_comfyui_refusing_the_upload_is_transient(
    ctx: WorkerContext, fake_comfyui: FakeComfy, images: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: Any, **kwargs: Any) -> dict[str, Any]:
        raise ComfyUIError("POST /upload/image: HTTP 400: bad")

    monkeypatch.setattr(ctx.client, "upload_image", refuse)
    run = run_with(ctx, images + "/cat.png")
    assert execute(ctx, run.id) == "retrying"
    error = final(ctx, run.id).error
    assert error is not None and error["type"] == "ComfyUIUnavailable" and "image: uploading" in error["message"]
    monkeypatch.undo()
    time.sleep(0.01)  # the (tiny) backoff
    redispatch(ctx)
    assert execute(ctx, run.id) == "succeeded"


def test_a_retry_on_the_same_comfyui_writes_the_same_file(
    ctx: WorkerContext, fake_comfyui: FakeComfy, images: str
) -> None:
    run = run_with(ctx, images + "/broken.png")
    assert execute(ctx, run.id) == "retrying"
    ROUTES["/broken.png"] = (200, "image/png", PNG)
    try:
        time.sleep(0.01)  # the (tiny) backoff
        redispatch(ctx)
        assert execute(ctx, run.id) == "succeeded"
    finally:
        ROUTES["/broken.png"] = (503, "text/plain", b"try later")
    assert fake_comfyui.stats()["uploads"] == [f"cd_{run.id}_image.png"]
