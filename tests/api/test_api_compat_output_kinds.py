"""Outputs of every kind (image, video, audio, text, 3-D file) in the native run view and the three compatibility
views: each product sees them as it would (/work/shared/seeds/): images where it lists images, the other kinds
beside them, texts as their strings."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from api.compat.flowai import FlowAIStream, flowai_output, output_items
from api.views import Links
from dispatcher.connections import Connections
from dispatcher.events import Event
from dispatcher.outputs import INLINE_TEXT_CHARS, TEXT_CONTENT_TYPE, inline_text
from dispatcher.runs import Output, Run, new_run
from dispatcher.storage import MemoryStore
from tests.api.conftest import AfterSubmit
from tests.api.helpers import TestClient, finish_run

# (node, filename, content type, kind, UI key, text)
KINDS = [
    ("4", "webp_00001_.webp", "image/webp", "image", "images", None),
    ("3", "video_00001_.mp4", "video/mp4", "video", "images", None),
    ("5", "audio_00001_.flac", "audio/flac", "audio", "audio", None),
    ("6", "mesh_00001_.glb", "model/gltf-binary", "file", "3d", None),
    ("7", "text-7.txt", TEXT_CONTENT_TYPE, "text", "text", "a lighthouse — 灯塔"),
]


def outputs_of_every_kind(store: MemoryStore, run_id: str) -> list[Output]:
    outputs = []
    for node, name, ctype, kind, ui_key, text in KINDS:
        key = f"{run_id}/1/{name}"
        size = store.put(key, [text.encode() if text is not None else name.encode()], ctype)
        outputs.append(Output(node, name, ctype, size, key, kind=kind, text=text, ui_key=ui_key))
    return outputs


def finished(client: TestClient, conns: Connections, store: MemoryStore) -> str:
    response = client.post("/v1/workflows/invert/runs", json={})
    assert response.status_code == 202, response.text
    run_id: str = response.json()["id"]
    finish_run(conns, run_id, outputs=outputs_of_every_kind(store, run_id))
    return run_id


def url(run_id: str, name: str) -> str:
    return f"http://testserver/v1/runs/{run_id}/outputs/{name}"


def test_the_run_view_lists_every_kind_and_the_text_inline(
    client: TestClient, fake_conns: Connections, store: MemoryStore
) -> None:
    run_id = finished(client, fake_conns, store)
    outputs = client.get(f"/v1/runs/{run_id}").json()["outputs"]
    assert [(o["node"], o["filename"], o["content_type"], o["kind"], o["text"]) for o in outputs] == [
        (node, name, ctype, kind, text) for node, name, ctype, kind, _, text in KINDS
    ]
    text = client.get(outputs[-1]["url"])
    assert text.headers["content-type"] == TEXT_CONTENT_TYPE and text.text == "a lighthouse — 灯塔"
    assert outputs[-1]["size"] == len("a lighthouse — 灯塔".encode())


def test_comflowy_lists_images_only_as_images_and_the_rest_beside_them(
    client: TestClient, fake_conns: Connections, store: MemoryStore
) -> None:
    run_id = finished(client, fake_conns, store)
    data = client.get("/api/open/v0/check", params={"id": run_id}).json()["data"]
    assert data["output_images"] == [url(run_id, "webp_00001_.webp")]
    assert data["full_outputs"] == {
        "4": {"images": [url(run_id, "webp_00001_.webp")]},
        "3": {"images": [], "videos": [url(run_id, "video_00001_.mp4")]},
        "5": {"images": [], "audio": [url(run_id, "audio_00001_.flac")]},
        "6": {"images": [], "files": [url(run_id, "mesh_00001_.glb")]},
        "7": {"images": [], "text": ["a lighthouse — 灯塔"]},
    }


def seed_file(run_id: str, name: str, subfolder: str = "") -> dict[str, str]:
    return {"url": url(run_id, name), "filename": name, "subfolder": subfolder, "type": "output"}


def test_the_flask_seed_keeps_images_for_pictures_and_adds_the_other_kinds(
    client: TestClient, fake_conns: Connections, store: MemoryStore
) -> None:
    run_id = finished(client, fake_conns, store)
    expected = {
        "images": [seed_file(run_id, "webp_00001_.webp")],
        "videos": [seed_file(run_id, "video_00001_.mp4")],
        "audio": [seed_file(run_id, "audio_00001_.flac")],
        "files": [seed_file(run_id, "mesh_00001_.glb")],
        "text": ["a lighthouse — 灯塔"],
    }
    status = client.get(f"/api/task_status/{run_id}").json()
    assert status["status"] == "completed" and {k: status[k] for k in expected} == expected
    assert client.get(f"/api/image/{run_id}").json() == {"status": "success", **expected}
    # The history entry keeps ComfyUI's own UI keys per node (SaveVideo's mp4 under images, SaveGLB's under 3d).
    history = client.get(f"/api/history/{run_id}").json()[run_id]["outputs"]
    assert history == {
        "4": {"images": [seed_file(run_id, "webp_00001_.webp")]},
        "3": {"images": [seed_file(run_id, "video_00001_.mp4")]},
        "5": {"audio": [seed_file(run_id, "audio_00001_.flac")]},
        "6": {"3d": [seed_file(run_id, "mesh_00001_.glb")]},
        "7": {"text": ["a lighthouse — 灯塔"]},
    }


def test_flowai_answers_the_urls_with_each_outputs_kind(
    client: TestClient, after_submit: AfterSubmit, fake_conns: Connections, store: MemoryStore
) -> None:
    after_submit(lambda run: finish_run(fake_conns, run.id, outputs=outputs_of_every_kind(store, run.id)), 0.1)
    reply = client.post("/v1/api/workflow/run/invert", json={"input": {}}).json()
    run_id = reply["run_id"]
    assert reply["output"] == [url(run_id, name) for _, name, *_ in KINDS]
    assert [(o["kind"], o["content_type"], o.get("text")) for o in reply["outputs"]] == [
        (kind, ctype, text) for _, _, ctype, kind, _, text in KINDS
    ]


def text_output(node: str, text: str) -> Output:
    size, key = len(text.encode()), f"r/1/text-{node}.txt"
    return Output(node, f"text-{node}.txt", TEXT_CONTENT_TYPE, size, key, kind="text", text=text, ui_key="text")


def test_flowai_answers_a_text_workflow_with_its_text() -> None:
    """FlowAI's text workflows answer {"output": "在呢。"}: a run whose outputs are all text answers the text."""
    texts = [text_output("7", "在呢。"), text_output("8", "second")]
    assert flowai_output(texts[:1], ["u7"]) == "在呢。"
    assert flowai_output(texts, ["u7", "u8"]) == "在呢。\nsecond"
    image = Output("4", "a.png", "image/png", 3, "r/1/a.png", kind="image")
    assert flowai_output([image, texts[0]], ["u4", "u7"]) == ["u4", "u7"]
    assert flowai_output([], []) == []
    assert output_items([texts[0]], ["u7"]) == [
        {"node": "7", "url": "u7", "kind": "text", "content_type": TEXT_CONTENT_TYPE, "size": 9, "text": "在呢。"}
    ]


def test_flowai_stream_ends_with_the_text_of_a_text_workflow() -> None:
    run: Run = new_run("text", {})
    render = FlowAIStream(run, Links(base="http://x", store=MemoryStore()), {"7": "PreviewAny"})
    output: dict[str, Any] = asdict(text_output("7", "在呢。"))
    render(Event("1-0", "queued", {}))
    render(Event("2-0", "output", output))
    frame = render(Event("3-0", "done", {"status": "succeeded"})).decode()
    assert frame.startswith("event: output\n") and '"output":"在呢。"' in frame and '"kind":"text"' in frame


def test_a_long_text_is_marked_cut_inline_and_flowai_answers_it_whole(
    client: TestClient, after_submit: AfterSubmit, fake_conns: Connections, store: MemoryStore
) -> None:
    whole = "灯" * (INLINE_TEXT_CHARS + 10)

    def finish(run: Run) -> None:
        key = f"{run.id}/1/text-7.txt"
        size = store.put(key, [whole.encode()], TEXT_CONTENT_TYPE)
        output = Output("7", "text-7.txt", TEXT_CONTENT_TYPE, size, key, kind="text", text=inline_text(whole))
        finish_run(fake_conns, run.id, outputs=[output])

    after_submit(finish, 0.1)
    reply = client.post("/v1/api/workflow/run/invert", json={"input": {}}).json()
    assert reply["output"] == whole and reply["outputs"][0]["text"] == whole  # read whole from the store
    (shown,) = client.get(f"/v1/runs/{reply['run_id']}").json()["outputs"]
    assert shown["text_truncated"] is True and len(shown["text"]) == INLINE_TEXT_CHARS
    assert client.get(shown["url"]).text == whole
