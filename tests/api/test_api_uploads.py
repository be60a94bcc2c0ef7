"""Input images at the API: ``POST /v1/uploads``, and image parameters of runs checked before anything is queued."""

from __future__ import annotations

import base64
import hashlib
import io
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from PIL import Image

from api.app import create_app
from dispatcher import keys
from dispatcher.connections import Connections
from dispatcher.inputs import MARK
from dispatcher.runs import RunStore
from dispatcher.settings import Settings, load_settings
from dispatcher.storage import MemoryStore
from dispatcher.uploads import UPLOAD_TTL_SECONDS
from tests.api.helpers import Backlog, TestClient, assert_problem, tenant_with_key

LIMIT = 16 * 1024


def png(size: tuple[int, int] = (8, 8)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (10, 200, 10)).save(buffer, format="PNG")
    return buffer.getvalue()


PNG = png()
ID = hashlib.sha256(PNG).hexdigest()[:32]
B64 = base64.b64encode(PNG).decode()
# Random pixels do not compress: a PNG larger than the limit, and one just under it but over max_body_bytes.
BIG_PNG = Image.frombytes("L", (200, 200), bytes((i * 7919) % 251 for i in range(40000)))


def big_png(side: int) -> bytes:
    buffer = io.BytesIO()
    BIG_PNG.crop((0, 0, side, side)).save(buffer, format="PNG", compress_level=0)
    return buffer.getvalue()


@pytest.fixture
def settings() -> Settings:
    return load_settings({}, max_body_bytes=4096, auth="disabled", input_max_bytes=LIMIT)


def run_body(image: Any) -> dict[str, Any]:
    return {"params": {"prompt": "a cat", "image": image}}


def submit(client: TestClient, image: Any, path: str = "/v1/workflows/img2img/runs", **extra: Any) -> Any:
    return client.post(path, json={**run_body(image), **extra})


def bound_image(conns: Connections, run_id: str) -> tuple[str, dict[str, Any]]:
    node = RunStore(conns.text).graph(run_id)["10"]
    return node["inputs"]["image"], node["_meta"]


# --- POST /v1/uploads -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["file", "image"])
def test_an_upload_is_stored_for_its_tenant_with_a_ttl(
    client: TestClient, fake_conns: Connections, store: MemoryStore, field: str
) -> None:
    response = client.post("/v1/uploads", files={field: ("cat.png", PNG, "application/octet-stream")})
    assert response.status_code == 201, response.text
    assert response.json() == {"id": ID, "name": "cat.png", "content_type": "image/png", "size": len(PNG)}
    assert store.files[f"uploads/default/{ID}/image.png"] == (PNG, "image/png")
    record = fake_conns.text.hgetall(keys.upload("default", ID))
    assert record["tenant"] == "default" and record["size"] == str(len(PNG))
    assert 0 < fake_conns.text.ttl(keys.upload("default", ID)) <= UPLOAD_TTL_SECONDS


def test_the_same_image_twice_is_one_upload(client: TestClient, store: MemoryStore) -> None:
    first = client.post("/v1/uploads", files={"file": ("a.png", PNG)}).json()
    second = client.post("/v1/uploads", files={"file": ("b.png", PNG)}).json()
    assert first["id"] == second["id"] == ID and second["name"] == "b.png"
    assert len(store.files) == 1


def test_other_form_fields_are_ignored(client: TestClient) -> None:
    response = client.post("/v1/uploads", data={"note": "hi"}, files={"file": ("x.png", PNG)})
    assert response.status_code == 201 and response.json()["id"] == ID


@pytest.mark.parametrize(
    ("files", "detail"),
    [
        ({"file": ("notes.txt", b"hello", "text/plain")}, "file: is not a PNG, JPEG, WebP or GIF image"),
        ({"file": ("empty.png", b"", "image/png")}, "file: the image is empty"),
        ({"other": ("x.png", PNG, "image/png")}, "file: is required"),
    ],
)
def test_what_is_not_an_image_is_a_422_naming_file(
    client: TestClient, store: MemoryStore, files: dict[str, Any], detail: str
) -> None:
    problem = assert_problem(client.post("/v1/uploads", files=files), 422)
    assert problem["detail"].startswith(detail) and problem["errors"][0]["param"] == "file"
    assert store.files == {}


@pytest.mark.parametrize("side", [130, 200], ids=["file-over-the-limit", "body-over-the-limit"])
def test_an_image_over_the_limit_is_a_413(client: TestClient, store: MemoryStore, side: int) -> None:
    data = big_png(side)
    assert data.startswith(b"\x89PNG") and len(data) > LIMIT
    assert_problem(client.post("/v1/uploads", files={"file": ("big.png", data)}), 413)
    assert store.files == {}


MULTIPART_X = "multipart/form-data; boundary=x"


@pytest.mark.parametrize(
    ("content", "headers"),
    [
        (PNG, {"Content-Type": "image/png"}),
        (b"nothing", {"Content-Type": MULTIPART_X}),
    ],
    ids=["not-multipart", "no-part"],
)  # fmt: skip
def test_a_body_that_is_not_multipart_is_a_400(client: TestClient, content: bytes, headers: dict[str, str]) -> None:
    assert_problem(client.post("/v1/uploads", content=content, headers=headers), 400)


def test_a_handwritten_multipart_body_with_a_quoted_boundary_is_read(client: TestClient) -> None:
    body = (
        b'--a\'b c\r\nContent-Disposition: form-data; name="note"\r\n\r\nhi\r\n'
        b'--a\'b c\r\ncontent-disposition: form-data; name="image"; filename="d.png"\r\n\r\n'
        + PNG
        + b"\r\n--a'b c--\r\n"
    )
    headers = {"Content-Type": 'multipart/form-data; boundary="a\'b c"'}
    response = client.post("/v1/uploads", content=body, headers=headers)
    assert response.status_code == 201, response.text
    assert response.json()["name"] == "d.png" and response.json()["size"] == len(PNG)


# --- image parameters of runs -----------------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["upload:{id}", "{id}"])
def test_a_run_names_an_upload(client: TestClient, fake_conns: Connections, form: str) -> None:
    assert client.post("/v1/uploads", files={"file": ("cat.png", PNG)}).status_code == 201
    response = submit(client, form.format(id=ID))
    assert response.status_code == 202, response.text
    value, meta = bound_image(fake_conns, response.json()["id"])
    assert value == f"upload:{ID}" and meta[MARK] == {"image": "image"}
    assert response.json()["params"]["image"] == f"upload:{ID}"


@pytest.mark.parametrize("image", [B64, f"data:image/png;base64,{B64}"], ids=["raw", "data-uri"])
def test_a_base64_image_is_stored_as_an_upload_and_the_run_names_it(
    client: TestClient, fake_conns: Connections, store: MemoryStore, image: str
) -> None:
    response = submit(client, image)
    assert response.status_code == 202, response.text
    value, _ = bound_image(fake_conns, response.json()["id"])
    assert value == f"upload:{ID}" and store.files[f"uploads/default/{ID}/image.png"][0] == PNG
    record = fake_conns.text.hgetall(keys.run(response.json()["id"]))
    assert B64 not in record["params"] and B64 not in str(fake_conns.text.get(keys.run_graph(response.json()["id"])))


def test_run_bodies_have_room_for_a_base64_image_only_where_a_workflow_takes_one(client: TestClient) -> None:
    image = base64.b64encode(big_png(100)).decode()
    assert 4096 < len(image) < LIMIT * 4 / 3
    assert submit(client, image).status_code == 202
    assert_problem(client.post("/v1/workflows/invert/runs", json={"params": {"pad": image}}), 413)


@pytest.mark.parametrize(
    ("path", "body"),
    [("/api/open/v0/run", {"workflow_id": "img2img"}), ("/api/workflow/img2img", {})],
    ids=["comflowy", "flask-seed"],  # FlowAI's route is the native one's path shape (and waits for the run)
)
def test_compat_routes_take_base64_images_too(
    client: TestClient, store: MemoryStore, path: str, body: dict[str, Any]
) -> None:
    image = base64.b64encode(big_png(100)).decode()
    response = client.post(path, json={**body, "params": {"prompt": "a cat", "image": image}})
    assert response.status_code == 200, response.text
    assert any(key.startswith("uploads/default/") for key in store.files)


@pytest.mark.parametrize(
    ("image", "detail"),
    [
        (base64.b64encode(big_png(130)).decode(), f"more than the limit of {LIMIT} bytes"),
        (base64.b64encode(b"GIF8 not really").decode(), "is not a PNG, JPEG, WebP or GIF image"),
        ("data:text/plain;base64,aGk=", "is not an image"),
        ("example.png", "is not an http(s) URL"),
        ("upload:" + "0" * 32, "does not exist or has expired"),
        ("http://127.0.0.1:9/cat.png", "not a public address"),
        ("http://[::1]/cat.png", "not a public address"),
        ("http://10.0.0.1/cat.png", "not a public address"),
        ("ftp://93.184.216.34/cat.png", "is not an http(s) URL"),
        ("https://93.184.216.34:99999/cat.png", "is not a valid URL"),
    ],
)
def test_a_bad_image_is_a_422_naming_it_and_nothing_is_queued(
    client: TestClient, backlog: Backlog, store: MemoryStore, image: str, detail: str
) -> None:
    problem = assert_problem(submit(client, image), 422)
    assert problem["detail"].startswith("image: ") and detail in problem["detail"]
    assert problem["errors"] == [{"param": "image", "detail": problem["detail"].removeprefix("image: ")}]
    assert backlog.empty and store.files == {}


def test_a_bad_image_given_as_node_input_names_the_parameter(client: TestClient, backlog: Backlog) -> None:
    problem = assert_problem(client.post("/v1/workflows/img2img/runs", json={"params": {"10::image": "x.png"}}), 422)
    assert problem["errors"][0]["param"] == "image" and backlog.empty


def test_a_public_url_is_bound_as_is(client: TestClient, fake_conns: Connections) -> None:
    response = submit(client, "https://93.184.216.34/cat.png")
    assert response.status_code == 202, response.text
    assert bound_image(fake_conns, response.json()["id"])[0] == "https://93.184.216.34/cat.png"


def test_the_operator_may_allow_loopback_urls(fake_conns: Connections, store: MemoryStore) -> None:
    settings = load_settings({"COMFY_DISPATCH_CALLBACK_ALLOW": "loopback"}, auth="disabled")
    with TestClient(create_app(settings, conns=fake_conns, store=store)) as client:
        assert submit(client, "http://127.0.0.1:9/cat.png").status_code == 202
        assert_problem(submit(client, "http://10.0.0.1/cat.png"), 422)


# --- tenants --------------------------------------------------------------------------------------------------


@pytest.fixture
def auth_client(fake_conns: Connections, store: MemoryStore) -> Iterator[TestClient]:
    app: FastAPI = create_app(load_settings({}, input_max_bytes=LIMIT), conns=fake_conns, store=store)
    with TestClient(app) as test_client:
        yield test_client


def test_uploads_need_the_submit_scope(auth_client: TestClient, fake_conns: Connections) -> None:
    reader = tenant_with_key(fake_conns, "acme", "read")
    assert_problem(auth_client.post("/v1/uploads", files={"file": ("a.png", PNG)}), 401)
    response = auth_client.post("/v1/uploads", files={"file": ("a.png", PNG)}, headers={"X-API-KEY": reader})
    assert_problem(response, 403)


def test_an_upload_of_another_tenant_is_not_found(auth_client: TestClient, fake_conns: Connections) -> None:
    acme, other = tenant_with_key(fake_conns, "acme"), tenant_with_key(fake_conns, "other")
    uploaded = auth_client.post("/v1/uploads", files={"file": ("a.png", PNG)}, headers={"X-API-KEY": acme})
    assert uploaded.status_code == 201
    path, body = "/v1/workflows/img2img/runs", run_body(f"upload:{ID}")
    problem = assert_problem(auth_client.post(path, json=body, headers={"X-API-KEY": other}), 422)
    assert "does not exist" in problem["detail"]
    assert auth_client.post(path, json=body, headers={"X-API-KEY": acme}).status_code == 202
