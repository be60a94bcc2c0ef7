"""GET /v1/runs/{id}/outputs/{filename}: bytes from the output store, and the URLs that point there."""

from __future__ import annotations

from pathlib import Path

import pytest

from api.app import create_app
from dispatcher.connections import Connections
from dispatcher.runs import Output
from dispatcher.settings import load_settings
from dispatcher.storage import LocalStore, MemoryStore
from tests.api.helpers import TestClient, assert_problem, finish_run, store_output

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8


def succeeded_run(client: TestClient, conns: Connections, store: MemoryStore) -> str:
    run_id: str = client.post("/v1/workflows/invert/runs", json={}).json()["id"]
    outputs = [
        store_output(store, run_id, "invert_00001_.png", PNG),
        store_output(store, run_id, "notes.txt", b"hello", "text/plain"),
    ]
    finish_run(conns, run_id, outputs=outputs)
    return run_id


def test_output_is_served_from_the_store(client: TestClient, fake_conns: Connections, store: MemoryStore) -> None:
    run_id = succeeded_run(client, fake_conns, store)
    run = client.get(f"/v1/runs/{run_id}").json()
    assert run["status"] == "succeeded" and run["progress"] == 1.0
    assert run["outputs"][0] == {
        "node": "9",
        "filename": "invert_00001_.png",
        "url": f"http://testserver/v1/runs/{run_id}/outputs/invert_00001_.png",
        "content_type": "image/png",
        "size": len(PNG),
        "kind": "image",
        "text": None,
        "text_truncated": False,
    }
    response = client.get(run["outputs"][0]["url"])
    assert response.status_code == 200
    assert response.content == PNG
    assert response.headers["content-type"] == "image/png"
    assert response.headers["content-length"] == str(len(PNG))
    text = client.get(f"/v1/runs/{run_id}/outputs/notes.txt")
    assert text.content == b"hello"
    assert text.headers["content-type"].startswith("text/plain")


@pytest.mark.parametrize("filename", ["other.png", "..%2Fsecret", "invert_00001_.PNG"])
def test_unknown_output_is_a_404_problem(
    client: TestClient, fake_conns: Connections, store: MemoryStore, filename: str
) -> None:
    run_id = succeeded_run(client, fake_conns, store)
    assert_problem(client.get(f"/v1/runs/{run_id}/outputs/{filename}"), 404)


def test_output_of_unknown_run_is_a_404_problem(client: TestClient) -> None:
    assert_problem(client.get("/v1/runs/feedface/outputs/a.png"), 404)


def test_listed_output_missing_from_the_store_is_a_404_problem(
    client: TestClient, fake_conns: Connections, store: MemoryStore
) -> None:
    run_id = succeeded_run(client, fake_conns, store)
    store.files.clear()
    assert_problem(client.get(f"/v1/runs/{run_id}/outputs/notes.txt"), 404)


def test_public_url_is_the_base_of_output_urls(fake_conns: Connections, store: MemoryStore) -> None:
    settings = load_settings({}, public_url="https://cd.example.com/", auth="disabled")
    app = create_app(settings, conns=fake_conns, store=store)
    with TestClient(app) as client:
        run_id = succeeded_run(client, fake_conns, store)
        url = client.get(f"/v1/runs/{run_id}").json()["outputs"][0]["url"]
    assert url == f"https://cd.example.com/v1/runs/{run_id}/outputs/invert_00001_.png"


class SignedStore(MemoryStore):
    def url(self, key: str) -> str | None:
        return f"https://bucket.example.com/{key}?signature=x"


def test_a_store_with_its_own_urls_is_linked_directly(fake_conns: Connections) -> None:
    store = SignedStore()
    with TestClient(create_app(load_settings({}, auth="disabled"), conns=fake_conns, store=store)) as client:
        run_id = succeeded_run(client, fake_conns, store)
        url = client.get(f"/v1/runs/{run_id}").json()["outputs"][0]["url"]
    assert url == f"https://bucket.example.com/{run_id}/1/invert_00001_.png?signature=x"


@pytest.mark.parametrize(
    ("size", "recorded"),
    [
        (100, 100),  # small: read on the event loop
        (64 * 1024 + 1, 64 * 1024 + 1),  # past the loop's limit: read whole in a thread
        (2 * 1024 * 1024, 2 * 1024 * 1024),  # past the whole-read limit: streamed
        (200 * 1024, 100),  # larger than its record says: read another way, never cut short
    ],
    ids=["on-loop", "whole", "streamed", "record-too-small"],
)
def test_a_local_file_is_served_whole_whatever_way_it_is_read(
    fake_conns: Connections, tmp_path: Path, size: int, recorded: int
) -> None:
    store = LocalStore(tmp_path)
    data = bytes(range(256)) * (size // 256) + bytes(size % 256)
    with TestClient(create_app(load_settings({}, auth="disabled"), conns=fake_conns, store=store)) as client:
        run_id: str = client.post("/v1/workflows/invert/runs", json={}).json()["id"]
        key = f"{run_id}/1/out.png"
        store.put(key, [data], "image/png")
        finish_run(fake_conns, run_id, outputs=[Output("9", "out.png", "image/png", recorded, key)])
        response = client.get(f"/v1/runs/{run_id}/outputs/out.png")
    assert response.status_code == 200 and response.content == data
    assert response.headers["content-type"] == "image/png"
