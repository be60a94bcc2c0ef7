"""The asyncio client: the same requests, retries and event resumption as the blocking one."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from comfy_dispatch_client import AsyncClient, Conflict, RunStatus
from tests.sdk.fakes import API, Recorder, problem, refuse_connection, run_json, sse, sse_response

pytestmark = pytest.mark.timeout(10)


class AsyncSleeps(list[float]):
    async def __call__(self, seconds: float) -> None:
        self.append(seconds)


class AsyncRecorder(Recorder):
    """The Recorder's answers for an async transport."""

    async def handle(self, request: httpx.Request) -> httpx.Response:
        await request.aread()
        return self(request)

    def async_transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)


def client_of(recorder: AsyncRecorder, sleeps: AsyncSleeps) -> AsyncClient:
    return AsyncClient(API, "cd_key", transport=recorder.async_transport(), sleep=sleeps, env={})


def test_submit_retries_with_one_key_then_waits_for_the_end() -> None:
    recorder = AsyncRecorder(
        refuse_connection,
        problem(429, retry_after=2),
        httpx.Response(202, json=run_json(status="queued")),
        httpx.Response(200, json=run_json(status="succeeded")),
    )
    sleeps = AsyncSleeps()

    async def scenario() -> RunStatus:
        async with client_of(recorder, sleeps) as client:
            run = await client.submit("invert", {"color": 1}, priority="low")
            return (await client.wait(run.id, timeout=60)).status

    assert asyncio.run(scenario()) is RunStatus.SUCCEEDED
    posts = recorder.requests[:3]
    assert len({r.headers["idempotency-key"] for r in posts}) == 1
    assert json.loads(posts[0].content) == {"params": {"color": 1}, "priority": "low"}
    assert recorder.requests[3].headers["authorization"] == "Bearer cd_key"
    assert len(sleeps) == 2 and sleeps[1] >= 2


class BrokenAsyncStream(httpx.AsyncByteStream):
    def __init__(self, data: bytes) -> None:
        self.data = data

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self.data
        raise httpx.ReadError("connection reset by peer")


def test_events_resume_with_last_event_id() -> None:
    first = sse(("1-0", "queued", {}), comments=2)
    recorder = AsyncRecorder(
        lambda r: httpx.Response(200, stream=BrokenAsyncStream(first), headers={"content-type": "text/event-stream"}),
        refuse_connection,
        sse_response(sse(("2-0", "started", {}), ("3-0", "error", {"status": "failed"}))),
    )

    async def scenario() -> list[str]:
        async with client_of(recorder, AsyncSleeps()) as client:
            return [event.type async for event in client.events("r1")]

    assert asyncio.run(scenario()) == ["queued", "started", "error"]
    assert [r.headers.get("last-event-id") for r in recorder.requests] == [None, "1-0", "1-0"]


def test_errors_and_downloads(tmp_path: Path) -> None:
    output = {"node": "3", "filename": "a.png", "url": f"{API}/o/a.png", "content_type": "image/png", "size": 3}
    recorder = AsyncRecorder(
        problem(409, "this run has ended"),
        httpx.Response(200, json=run_json(status="succeeded", outputs=[output])),
        httpx.Response(200, content=b"abc"),
    )

    async def scenario() -> list[Path]:
        async with client_of(recorder, AsyncSleeps()) as client:
            with pytest.raises(Conflict):
                await client.cancel("r1")
            return await client.download("r1", tmp_path)

    assert asyncio.run(scenario()) == [tmp_path / "a.png"]
    assert (tmp_path / "a.png").read_bytes() == b"abc"


def test_submit_many_and_iter_runs() -> None:
    def batch(request: httpx.Request) -> httpx.Response:
        runs = json.loads(request.content)["runs"]
        answers = [{"index": i, "status": 202, "run": run_json(f"r{i}"), "replayed": False} for i in range(len(runs))]
        return httpx.Response(200, json={"batch_id": "b1", "accepted": len(runs), "refused": 0, "items": answers})

    pages = [
        httpx.Response(200, json={"runs": [run_json("a")], "next_cursor": "x"}),
        httpx.Response(200, json={"runs": [run_json("b")], "next_cursor": None}),
    ]
    recorder = AsyncRecorder(batch, batch, *pages)

    async def scenario() -> tuple[int, list[str]]:
        async with client_of(recorder, AsyncSleeps()) as client:
            result = await client.submit_many([{"workflow": "invert"}] * 3, chunk_size=2)
            return result.accepted, [run.id async for run in client.iter_runs(page_size=1)]

    assert asyncio.run(scenario()) == (3, ["a", "b"])
