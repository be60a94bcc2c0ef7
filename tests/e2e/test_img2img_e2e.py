"""img2img end to end through real processes: an input image by URL, base64 or upload reaches the fake ComfyUI."""

from __future__ import annotations

import base64
import http.server
import io
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from PIL import Image
from redis import Redis

from dispatcher.redis_server import RedisServer
from tests.support_stack import LocalStack, submit

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

INPUT_MAX_BYTES = 5 * 1024 * 1024  # the default


def png(color: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), color).save(buffer, format="PNG")
    return buffer.getvalue()


CAT = png((250, 120, 10))
FILES = {"/cat.png": CAT, "/huge.png": CAT + b"\0" * INPUT_MAX_BYTES}


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
        body = FILES.get(self.path)
        self.send_response(200 if body is not None else 404)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(body or b"")))
        self.end_headers()
        self.wfile.write(body or b"")

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def images() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def stack(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """One API, scheduler, worker and fake ComfyUI for the module; loopback URLs allowed (our image server)."""
    Redis.from_url(redis_server.url).flushall()
    env = {"COMFY_DISPATCH_CALLBACK_ALLOW": "loopback"}
    with LocalStack(redis_server.url, tmp_path_factory.mktemp("img2img"), workers=1, env=env) as running:
        yield running
    Redis.from_url(redis_server.url).flushall()


def run_img2img(stack: LocalStack, image: str) -> dict[str, Any]:
    """Submit an img2img run through the API and wait for its end; returns the finished run."""
    session = requests.Session()
    run_id = submit(session, stack.api, "img2img", {"params": {"prompt": "a cat", "image": image, "denoise": 0.5}})
    run: dict[str, Any] = session.get(f"{stack.api}/v1/runs/{run_id}", params={"wait": 60}, timeout=70).json()
    return run


def assert_ran_with_uploaded_input(stack: LocalStack, run: dict[str, Any]) -> None:
    assert run["status"] == "succeeded", f"{run}\n{stack.logs()}"  # a str: shown whole
    (fake,) = stack.fakes
    name = f"cd_{run['id']}_image.png"
    assert name in fake.stats()["uploads"]  # type: ignore[operator]
    assert (fake.data_dir / "input" / "comfy-dispatch" / name).read_bytes() == CAT
    (output,) = run["outputs"]
    data = requests.get(output["url"], timeout=10).content
    assert data.startswith(b"\x89PNG") and output["size"] == len(data)


def test_a_url_input_runs_end_to_end(stack: LocalStack, images: str) -> None:
    assert_ran_with_uploaded_input(stack, run_img2img(stack, f"{images}/cat.png"))


def test_a_base64_input_runs_end_to_end(stack: LocalStack) -> None:
    assert_ran_with_uploaded_input(stack, run_img2img(stack, "data:image/png;base64," + base64.b64encode(CAT).decode()))


def test_an_uploaded_input_runs_end_to_end(stack: LocalStack) -> None:
    reply = requests.post(f"{stack.api}/v1/uploads", files={"file": ("cat.png", CAT, "image/png")}, timeout=10)
    assert reply.status_code == 201, reply.text
    assert_ran_with_uploaded_input(stack, run_img2img(stack, "upload:" + reply.json()["id"]))


def test_an_oversized_url_input_fails_naming_the_parameter(stack: LocalStack, images: str) -> None:
    run = run_img2img(stack, f"{images}/huge.png")
    assert run["status"] == "failed" and run["attempts"] == 1, run
    assert run["error"]["type"] == "input_error" and run["error"]["param"] == "image"
    assert run["error"]["message"].startswith("image: ") and "more than the limit" in run["error"]["message"]
    assert f"cd_{run['id']}_image.png" not in stack.fakes[0].stats()["uploads"]  # type: ignore[operator]


def test_a_refused_input_is_a_422_before_anything_is_queued(stack: LocalStack) -> None:
    reply = requests.post(
        f"{stack.api}/v1/workflows/img2img/runs",
        json={"params": {"prompt": "a cat", "image": "http://10.0.0.1/cat.png"}},
        timeout=10,
    )
    assert reply.status_code == 422 and reply.json()["errors"][0]["param"] == "image", reply.text
