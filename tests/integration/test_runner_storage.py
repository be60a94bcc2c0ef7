"""A run is succeeded only once every output is stored: a store that keeps failing requeues the run."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from pathlib import Path

import pytest

from dispatcher import keys
from dispatcher.errors import StorageError
from dispatcher.runs import RunStatus
from dispatcher.storage import LocalStore, MemoryStore
from tests.integration.conftest import ContextFactory
from tests.integration.test_runner import execute, final, redispatch, submit
from tests.support import FakeComfy
from worker import storing


class SecondOutputFails(MemoryStore):
    """Stores the first output of a run; every put of any other output fails, as an S3 outage would."""

    def __init__(self) -> None:
        super().__init__()
        self.failing = True
        self.attempts: list[str] = []

    def put(self, key: str, chunks: Iterable[bytes], content_type: str) -> int:
        self.attempts.append(key)
        data = b"".join(chunks)
        if self.failing and "second" in key:
            raise StorageError("S3 answered 503 Slow Down")
        return super().put(key, [data], content_type)


def test_a_failing_second_output_requeues_the_run(
    worker_context: ContextFactory, fake_comfyui: FakeComfy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(storing, "STORE_RETRY_BASE", 0.001)
    ctx = worker_context()
    ctx.store = store = SecondOutputFails()
    run = submit(ctx, "invert", {"params": {"width": 8, "height": 8}})
    graph = ctx.runs.graph(run.id)
    # A second SaveImage: node "4" comes after "3", so its file is stored second.
    graph["4"] = {"class_type": "SaveImage", "inputs": {"filename_prefix": f"second_{run.id}", "images": ["1", 0]}}
    ctx.conns.text.set(keys.run_graph(run.id), json.dumps(graph))

    assert execute(ctx, run.id) == "retrying"
    queued = final(ctx, run.id)
    assert queued.status is RunStatus.QUEUED and queued.outputs == [] and queued.attempts == 1
    assert queued.error is not None and queued.error["type"] == "OutputNotStored"
    assert "503" in queued.error["message"]
    second = [k for k in store.attempts if "second" in k]
    # Tried once as soon as its node saved it, then at the end with retries, before giving up.
    assert len(second) == 1 + storing.STORE_ATTEMPTS and len(set(second)) == 1

    store.failing = False  # S3 is back: the retry takes the prompt from ComfyUI's history and stores both
    time.sleep(0.01)  # the (tiny) backoff
    redispatch(ctx)
    assert execute(ctx, run.id) == "succeeded"
    done = final(ctx, run.id)
    assert done.attempts == 2 and len(done.outputs) == 2
    assert all(o.key.startswith(f"{run.id}/2/") and o.key in store.files for o in done.outputs)
    assert fake_comfyui.stats()["executed"] == 1


class Recording(MemoryStore):
    """Every call, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, str]] = []

    def prepare(self, prefix: str) -> None:
        self.calls.append(("prepare", prefix))
        super().prepare(prefix)

    def put(self, key: str, chunks: Iterable[bytes], content_type: str) -> int:
        self.calls.append(("put", key))
        return super().put(key, chunks, content_type)


def test_the_attempts_folder_is_prepared_once_the_prompt_is_posted(
    worker_context: ContextFactory, fake_comfyui: FakeComfy
) -> None:
    ctx = worker_context()
    ctx.store = store = Recording()
    run = submit(ctx, "invert", {"params": {"width": 8, "height": 8}})
    assert execute(ctx, run.id) == "succeeded"
    (output,) = final(ctx, run.id).outputs
    assert store.calls == [("prepare", f"{run.id}/1"), ("put", output.key)]


class Unpreparable(MemoryStore):
    def prepare(self, prefix: str) -> None:
        raise OSError("disk full")


def test_a_store_that_cannot_prepare_still_stores(worker_context: ContextFactory, fake_comfyui: FakeComfy) -> None:
    ctx = worker_context()
    ctx.store = store = Unpreparable()
    run = submit(ctx, "invert", {"params": {"width": 8, "height": 8}})
    assert execute(ctx, run.id) == "succeeded"
    (output,) = final(ctx, run.id).outputs
    assert output.key in store.files


def test_an_attempt_that_stores_nothing_leaves_no_folder(
    worker_context: ContextFactory, fake_comfyui: FakeComfy
) -> None:
    ctx = worker_context()
    assert isinstance(ctx.store, LocalStore)
    ctx.store = store = PreparedFolders(ctx.store.root)
    fake_comfyui.control(fail_node_type="ImageInvert", exception_type="ValueError", exception_message="bad pixels")
    failed = submit(ctx, "invert", {"params": {"width": 8, "height": 8}})
    assert execute(ctx, failed.id) == "failed"
    assert store.made == [f"{failed.id}/1"]  # prepared as it executed...
    assert not (store.root / failed.id).exists()  # ... and taken away

    fake_comfyui.control(fail_node_type="")
    done = submit(ctx, "invert", {"params": {"width": 8, "height": 8}})
    assert execute(ctx, done.id) == "succeeded"
    (output,) = final(ctx, done.id).outputs
    assert (store.root / output.key).is_file()


class PreparedFolders(LocalStore):
    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.made: list[str] = []

    def prepare(self, prefix: str) -> None:
        super().prepare(prefix)
        self.made.append(prefix)
