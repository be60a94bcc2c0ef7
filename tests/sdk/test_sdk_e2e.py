"""The SDK against a whole stack of real processes: runs, batches, listings, and events across an API restart."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from comfy_dispatch_client import Client, Event, NotFound, RunStatus
from tests.cli.helpers import assert_inverted
from tests.support import Proc, wait_http
from tests.support_stack import LocalStack

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


def small(color: int) -> dict[str, int]:
    return {"width": 8, "height": 8, "color": color}


def test_submit_wait_download_and_a_replayed_key(redis_url: str, tmp_path: Path) -> None:
    with LocalStack(redis_url, tmp_path, workers=1) as stack, Client(stack.api, env={}) as client:
        run = client.submit("invert", small(0x123456), idempotency_key="order-1")
        assert run.status is RunStatus.QUEUED and not run.replayed
        done = client.wait(run.id, timeout=60)
        assert done.succeeded and done.gpu_seconds >= 0 and len(done.outputs) == 1
        (path,) = client.download(done, tmp_path / "files")
        assert_inverted(path, 0x123456)
        again = client.submit("invert", small(0x123456), idempotency_key="order-1")
        assert again.id == run.id and again.replayed and again.succeeded
        with pytest.raises(NotFound) as caught:
            client.get("no-such-run")
        assert caught.value.status == 404 and caught.value.instance


def test_submit_many_then_follow_the_batch(redis_url: str, tmp_path: Path) -> None:
    with LocalStack(redis_url, tmp_path, workers=2) as stack, Client(stack.api, env={}) as client:
        items = [{"workflow": "invert", "params": small(i), "idempotency_key": f"f/{i}"} for i in range(30)]
        items.append({"workflow": "invert", "params": {"color": "red"}})
        result = client.submit_many(items, chunk_size=20)
        assert result.accepted == 30 and result.refused == 1 and len(result.batch_ids) == 2
        assert result.items[30].status == 422 and result.items[30].error is not None
        assert all(run.batch_id in result.batch_ids for run in result.runs)
        for run in result.runs:
            assert client.wait(run.id, timeout=60).succeeded
        batch = client.get_batch(result.batch_ids[0], limit=5)
        assert batch.total == 20 and batch.done and batch.counts.succeeded == 20 and len(batch.runs) == 5
        assert [run.id for run in client.batch_runs(batch.id, page_size=7)] == [r.id for r in result.runs[:20]]
        again = client.submit_many(items[:30])
        assert all(item.replayed for item in again.items)
        assert [r.id for r in again.runs] == [r.id for r in result.runs]


def test_list_runs_pages_through_the_tenants_runs(redis_url: str, tmp_path: Path) -> None:
    with LocalStack(redis_url, tmp_path, workers=1) as stack, Client(stack.api, env={}) as client:
        ids = [client.submit("invert", small(i)).id for i in range(5)]
        for run_id in ids:
            client.wait(run_id, timeout=60)
        page = client.list_runs(workflow="invert", limit=2)
        assert len(page.runs) == 2 and page.next_cursor
        listed = [run.id for run in client.iter_runs(status="succeeded", page_size=2)]
        assert sorted(listed) == sorted(ids)
        assert list(client.iter_runs(status="failed")) == []


def restart_api(stack: LocalStack, down_seconds: float, killed_at: list[float]) -> None:
    """SIGKILL the API, leave it down ``down_seconds`` (connections refused), start it again on its port."""
    assert stack.api_proc is not None
    stack.api_proc.kill()
    killed_at.append(time.time())
    time.sleep(down_seconds)
    stack.api_proc = Proc(["api", "--port", str(stack.api_port)], stack.tmp / "api-2.log", stack.env).start()
    wait_http(stack.api + "/readyz")


def test_events_survive_the_api_being_killed_and_restarted_mid_run(redis_url: str, tmp_path: Path) -> None:
    with LocalStack(redis_url, tmp_path, workers=1, exec_seconds=3) as stack:
        with Client(stack.api, env={}) as client:  # the default retry policy
            run = client.submit("invert", small(0xABCDEF))
            events: list[Event] = []
            restart: threading.Thread | None = None
            killed_at: list[float] = []
            for event in client.events(run.id):
                events.append(event)
                if event.type == "started" and restart is None:
                    restart = threading.Thread(target=restart_api, args=(stack, 1.5, killed_at))
                    restart.start()
            assert restart is not None
            restart.join(30)
            types = [e.type for e in events]
            assert types[0] == "queued" and "started" in types and types[-1] == "done", (types, stack.logs())
            assert "output" in types
            ids = [tuple(int(part) for part in e.id.split("-")) for e in events]
            assert ids == sorted(set(ids)), "an event came twice"
            # The run ended after the API was killed: its end came through a connection made after the restart.
            assert killed_at and ids[-1][0] / 1000 > killed_at[0], "the run ended before the API was killed"
            history = [e.id for e in client.events(run.id)]  # the whole stream, read again after the end
            assert [e.id for e in events] == history, "an event was lost"
            final = client.get(run.id)
            assert final.succeeded and final.attempts == 1


def test_publish_read_run_and_retire_a_workflow(redis_url: str, tmp_path: Path) -> None:
    graph = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0x123456}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"filename_prefix": "sdk", "images": ["2", 0]}},
    }
    manifest = {"params": {"color": {"node": "1", "input": "color", "type": "int", "default": 0}}}
    with LocalStack(redis_url, tmp_path, workers=1) as stack, Client(stack.api, env={}) as client:
        first = client.publish_workflow("sdk-tiny", graph)
        assert first.version == 1 and first.inferred and first.graph == graph
        second = client.publish_workflow("sdk-tiny", graph, manifest)
        assert second.version == 2 and not second.inferred and list(second.params) == ["color"]
        assert client.publish_workflow("sdk-tiny", graph, manifest).version == 2  # unchanged: no version 3
        assert "sdk-tiny" in {w.id for w in client.list_workflows()}
        assert [v.version for v in client.workflow_versions("sdk-tiny")] == [1, 2]
        assert client.get_workflow("sdk-tiny", 1).inferred

        run = client.wait(client.submit("sdk-tiny", {}, version=1).id, timeout=60)
        assert run.succeeded and run.workflow_version == 1
        (path,) = client.download(run, tmp_path / "files")
        assert_inverted(path, 0x123456)
        client.retire_workflow("sdk-tiny")
        with pytest.raises(NotFound) as caught:
            client.submit("sdk-tiny", {"color": 1})
        assert caught.value.status == 410
