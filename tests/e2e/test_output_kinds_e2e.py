"""One run per output kind through real processes (API, scheduler, worker, fake ComfyUI, redis-server): each
output is stored and listed with its content type, kind and size, and the bytes behind its URL are the file
ComfyUI saved (a text: its string, UTF-8). The workflows are in ``tests/e2e/output_kinds/``, with the bundled
``workflows/animated-webp`` (EmptyImage, batch 4, into SaveAnimatedWEBP)."""

from __future__ import annotations

import io
import shutil
from pathlib import Path
from typing import Any

import pytest
import requests
from PIL import Image

from tests.support_stack import LocalStack, submit

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

HERE = Path(__file__).resolve().parent
BUNDLED = HERE.parents[1] / "workflows"
TEXT = "text/plain; charset=utf-8"

# workflow -> {filename: (content type, kind, the file's subfolder on ComfyUI; None for a text)}; {rid} is the run id
# the dispatcher adds to every filename_prefix
EXPECTED: dict[str, dict[str, tuple[str, str, str | None]]] = {
    "kinds-image": {
        "webp_{rid}_00001_.webp": ("image/webp", "image", "kinds"),
        "apng_{rid}_00001_.png": ("image/png", "image", "kinds"),
        "gif_{rid}_00001.gif": ("image/gif", "image", "kinds"),
    },
    "kinds-video": {
        "video_{rid}_00001_.mp4": ("video/mp4", "video", "kinds"),
        "vhs_{rid}_00001.mp4": ("video/mp4", "video", "kinds"),
    },
    "kinds-audio": {
        "audio_{rid}_00001_.flac": ("audio/flac", "audio", "kinds"),
        "audio_{rid}_00002_.mp3": ("audio/mpeg", "audio", "kinds"),
        "audio_{rid}_00003_.opus": ("audio/ogg; codecs=opus", "audio", "kinds"),
    },
    "kinds-text": {"text-3.txt": (TEXT, "text", None)},
    "kinds-file": {"mesh_{rid}_00001_.glb": ("model/gltf-binary", "file", "kinds")},
    "animated-webp": {"animated_{rid}_00001_.webp": ("image/webp", "image", "")},
}
MAGIC = {
    "image/webp": b"RIFF",
    "image/png": b"\x89PNG",
    "image/gif": b"GIF89a",
    "audio/flac": b"fLaC",
    "model/gltf-binary": b"glTF",
}


def workflows_dir(tmp: Path) -> Path:
    folder = tmp / "workflows"
    shutil.copytree(HERE / "output_kinds", folder)
    shutil.copytree(BUNDLED / "animated-webp", folder / "animated-webp")
    return folder


def finished(session: requests.Session, api: str, run_id: str) -> dict[str, Any]:
    run: dict[str, Any] = session.get(f"{api}/v1/runs/{run_id}", params={"wait": 60}, timeout=70).json()
    assert run["status"] == "succeeded", run
    return run


@pytest.mark.parametrize("local_outputs", [False, True], ids=["over-view", "from-comfyuis-folder"])
def test_one_run_per_output_kind(redis_url: str, tmp_path: Path, local_outputs: bool) -> None:
    """Downloaded over /view, or read from ComfyUI's output folder by a worker on its host
    (``--comfyui-output-dir``): the same outputs, byte for byte."""
    env = {"COMFY_DISPATCH_WORKFLOWS_DIR": str(workflows_dir(tmp_path))}
    with LocalStack(redis_url, tmp_path, workers=1, env=env, local_outputs=local_outputs) as stack:
        (fake,) = stack.fakes
        api, session = stack.api, requests.Session()
        bodies = {"kinds-text": {"params": {"prompt": "a harbour"}}}
        runs = {name: submit(session, api, name, bodies.get(name, {})) for name in EXPECTED}
        for name, run_id in runs.items():
            outputs = finished(session, api, run_id)["outputs"]
            expected = {filename.format(rid=run_id): spec for filename, spec in EXPECTED[name].items()}
            assert {o["filename"]: (o["content_type"], o["kind"]) for o in outputs} == {
                filename: (ctype, kind) for filename, (ctype, kind, _) in expected.items()
            }, (name, stack.logs())
            for output in outputs:
                reply = session.get(output["url"], timeout=10)
                assert reply.status_code == 200, reply.text
                assert reply.headers["content-type"] == output["content_type"]
                assert len(reply.content) == output["size"] == int(reply.headers["content-length"])
                subfolder = expected[output["filename"]][2]
                if subfolder is None:
                    assert output["text"] == reply.content.decode() == "a harbour at dusk — 灯塔"
                    continue
                assert output["text"] is None
                saved = fake.data_dir / "output" / subfolder / output["filename"]
                assert reply.content == saved.read_bytes(), output  # the very file ComfyUI saved
                assert reply.content.startswith(MAGIC.get(output["content_type"], b""))
                if output["kind"] == "video":
                    assert reply.content[4:8] == b"ftyp" and b"avcC" in reply.content
                if output["kind"] == "image":
                    with Image.open(io.BytesIO(reply.content)) as image:
                        assert image.format in ("WEBP", "PNG", "GIF")
                        if name == "kinds-image":
                            assert image.n_frames == 2 and image.size == (32, 24)  # red twice (merged), then blue
        views = fake.stats()["views"]
        assert views == 0 if local_outputs else views == 10, views  # one /view per file saved


def test_a_text_workflow_through_flowai_answers_its_text(redis_url: str, tmp_path: Path) -> None:
    """FlowAI's text workflows answer {"output": "..."}: so does a run whose outputs are all text."""
    env = {"COMFY_DISPATCH_WORKFLOWS_DIR": str(workflows_dir(tmp_path))}
    with LocalStack(redis_url, tmp_path, workers=1, env=env) as stack:
        session = requests.Session()
        reply = session.post(
            f"{stack.api}/v1/api/workflow/run/kinds-text", json={"input": {"prompt": "hi"}}, timeout=70
        )
        assert reply.status_code == 200, reply.text
        body = reply.json()
        assert body["output"] == "hi at dusk — 灯塔"
        assert [(o["kind"], o["content_type"], o["text"]) for o in body["outputs"]] == [("text", TEXT, body["output"])]
        check = session.get(f"{stack.api}/api/open/v0/check", params={"id": body["run_id"]}, timeout=10).json()
        assert check["data"]["output_images"] == [] and check["data"]["full_outputs"] == {
            "3": {"images": [], "text": [body["output"]]}
        }
        # The Flask seed: its task status lists pictures under "images" and the text beside them; its history
        # entry keeps ComfyUI's own key for the node's output.
        task = session.get(f"{stack.api}/api/task_status/{body['run_id']}", timeout=10).json()
        assert task["status"] == "completed" and task["images"] == [] and task["text"] == [body["output"]]
        entry = session.get(f"{stack.api}/api/history/{body['run_id']}", timeout=10).json()[body["run_id"]]
        assert entry["outputs"] == {"3": {"text": [body["output"]]}}
