"""The asyncio client: ``AsyncClient(api_url, api_key)``, the methods of :class:`~comfy_dispatch_client.Client`,
awaitable; ``events``, ``list_runs`` and ``batch_runs`` are async iterators.

Output files are written from the event loop as their chunks arrive (small blocking writes, one fsync
per file): cheap next to the network, and no thread per download.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import httpx
from httpx_sse import SSEError, aconnect_sse

from comfy_dispatch_client import calls
from comfy_dispatch_client.batching import MAX_CHUNK, BatchPlan, RunRequest
from comfy_dispatch_client.config import ClientConfig
from comfy_dispatch_client.downloads import OutputFile, target_path
from comfy_dispatch_client.errors import (
    RETRYABLE_ERRORS,
    BadRequest,
    ConnectionFailed,
    DispatchError,
    ProtocolError,
    RunFailed,
    WaitTimeout,
)
from comfy_dispatch_client.models import (
    Batch,
    BatchSubmission,
    Event,
    Output,
    Run,
    RunPage,
    Workflow,
    WorkflowVersion,
)
from comfy_dispatch_client.retrying import RetryPolicy, async_retrying, backoff, retry_after_of
from comfy_dispatch_client.streaming import READ_TIMEOUT, EventCursor
from comfy_dispatch_client.transport import DEFAULT_TIMEOUT, client_options, failure, raise_for_answer, request_timeout

T = TypeVar("T")


class AsyncClient:
    """A client of the Comfy Dispatch API for asyncio; see :class:`~comfy_dispatch_client.Client` for the settings.

    Use it as an async context manager, or await :meth:`aclose`.
    """

    def __init__(
        self,
        api_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        env: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.config = ClientConfig.resolve(api_url, api_key, env)
        self.retry = retry or RetryPolicy()
        self._timeout = timeout
        self._sleep = sleep
        self._http = httpx.AsyncClient(transport=transport, **client_options(self.config, timeout))

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- runs -----------------------------------------------------------------------------------------------

    async def submit(
        self,
        workflow: str,
        params: Mapping[str, Any] | None = None,
        *,
        priority: str | None = None,
        idempotency_key: str | None = None,
        **options: Any,
    ) -> Run:
        """Queue a run of ``workflow`` (see :meth:`Client.submit`)."""
        op = calls.submit(workflow, params, priority=priority, idempotency_key=idempotency_key, options=options)
        return await self._do(op)

    async def get(self, run_id: str) -> Run:
        return await self._do(calls.get_run(run_id))

    async def wait(self, run_id: str, timeout: float | None = None) -> Run:
        """The run once it has ended, by long polls; WaitTimeout if not within ``timeout`` s (None: no limit)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            started = time.monotonic()
            left = calls.MAX_WAIT_SECONDS if deadline is None else deadline - started
            run = await self._do(calls.get_run(run_id, wait=left))
            if run.ended:
                return run
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                raise WaitTimeout(run, timeout or 0.0)
            if now - started < calls.MIN_POLL_SECONDS:  # an API that did not hold the poll: do not spin
                await self._sleep(calls.MIN_POLL_SECONDS)

    async def run(
        self,
        workflow: str,
        params: Mapping[str, Any] | None = None,
        *,
        timeout: float | None = None,
        priority: str | None = None,
        idempotency_key: str | None = None,
        **options: Any,
    ) -> Run:
        """Submit, wait, and return the succeeded run; RunFailed if it failed or was canceled."""
        run = await self.submit(workflow, params, priority=priority, idempotency_key=idempotency_key, **options)
        run = run if run.ended else await self.wait(run.id, timeout)
        if not run.succeeded:
            raise RunFailed(run)
        return run

    async def cancel(self, run_id: str) -> Run:
        return await self._do(calls.cancel_run(run_id))

    async def events(self, run_id: str, *, last_event_id: str | None = None) -> AsyncIterator[Event]:
        """The run's events until its terminal one, reconnecting with ``Last-Event-ID`` (see :meth:`Client.events`)."""
        cursor = EventCursor(last_event_id)
        path = calls.events_path(run_id)
        while not cursor.ended:
            error: DispatchError | None = None
            try:
                async for event in self._stream_once(path, cursor):
                    yield event
            except RETRYABLE_ERRORS as exc:
                error = exc
            if cursor.ended:
                return
            lost = cursor.lost()
            if lost >= self.retry.attempts:
                raise error or ConnectionFailed(f"the events of run {run_id} kept ending before the run's end")
            await self._sleep(backoff(self.retry, lost, retry_after_of(error)))

    async def download(self, run: Run | str, folder: str | os.PathLike[str]) -> list[Path]:
        """Write each output of ``run`` to ``folder``/its file name, atomically; the paths, in order."""
        if isinstance(run, str):
            run = await self.get(run)
        paths = []
        for output in run.outputs:
            path = target_path(Path(folder), output.filename)
            await async_retrying(self.retry, self._sleep)(self._download_once, output, path)
            paths.append(path)
        return paths

    async def list_runs(
        self,
        status: str | None = None,
        workflow: str | None = None,
        since: datetime | float | str | None = None,
        limit: int = calls.DEFAULT_PAGE,
        cursor: str | None = None,
    ) -> RunPage:
        """One page of the tenant's runs, newest first (see :meth:`Client.list_runs`)."""
        return await self._do(
            calls.list_runs(status=status, workflow=workflow, since=since, limit=limit, cursor=cursor)
        )

    async def iter_runs(
        self,
        status: str | None = None,
        workflow: str | None = None,
        since: datetime | float | str | None = None,
        *,
        page_size: int = calls.DEFAULT_PAGE,
        max_runs: int | None = None,
    ) -> AsyncIterator[Run]:
        """Every run :meth:`list_runs` finds, page after page; at most ``max_runs`` (see :meth:`Client.iter_runs`)."""
        cursor: str | None = None
        count = 0
        while (size := calls.next_page_size(page_size, max_runs, count)) > 0:
            page = await self.list_runs(status, workflow, since, size, cursor)
            for run in page.runs[:size]:
                yield run
            count += min(size, len(page.runs))
            if not page.next_cursor:
                return
            cursor = page.next_cursor

    # -- batches --------------------------------------------------------------------------------------------

    async def submit_many(
        self,
        items: Iterable[RunRequest | Mapping[str, Any]],
        *,
        chunk_size: int = MAX_CHUNK,
        on_batch_done_url: str | None = None,
    ) -> BatchSubmission:
        """Submit runs through the batch endpoint (see :meth:`Client.submit_many`)."""
        plan = BatchPlan(items, chunk_size=chunk_size, policy=self.retry)
        while (chunk := plan.next_chunk()) is not None:
            if chunk.delay:
                await self._sleep(chunk.delay)
            try:
                answer = await self._do(calls.submit_batch(chunk.items, on_batch_done_url=on_batch_done_url))
            except BadRequest as exc:
                if exc.status != 413:
                    raise
                plan.too_large(chunk, exc)
                continue
            plan.take_answer(chunk, answer)
        return plan.result()

    async def get_batch(self, batch_id: str, *, limit: int | None = None, cursor: str | None = None) -> Batch:
        return await self._do(calls.get_batch(batch_id, limit=limit, cursor=cursor))

    async def batch_runs(self, batch_id: str, *, page_size: int = 500) -> AsyncIterator[Run]:
        cursor: str | None = None
        while True:
            batch = await self.get_batch(batch_id, limit=page_size, cursor=cursor)
            for run in batch.runs:
                yield run
            if not batch.next_cursor or not batch.runs:
                return
            cursor = batch.next_cursor

    async def cancel_batch(self, batch_id: str) -> Batch:
        return await self._do(calls.cancel_batch(batch_id))

    # -- workflows ------------------------------------------------------------------------------------------

    async def list_workflows(self) -> list[Workflow]:
        """Every workflow that takes runs, at its latest version."""
        return await self._do(calls.list_workflows())

    async def get_workflow(self, workflow: str, version: int | None = None) -> Workflow:
        """A workflow's latest version (or ``version``) with its manifest and graph."""
        return await self._do(calls.get_workflow(workflow, version))

    async def workflow_versions(self, workflow: str) -> list[WorkflowVersion]:
        """Every published version of a workflow, oldest first."""
        return await self._do(calls.workflow_versions(workflow))

    async def publish_workflow(
        self, workflow: str, graph: Mapping[str, Any], manifest: Mapping[str, Any] | None = None
    ) -> Workflow:
        """Publish ``graph`` (API or UI format) with ``manifest`` (None: inferred) as the workflow's new latest
        version (admin key); the same graph and manifest as the latest publish nothing and give it back."""
        return await self._do(calls.publish_workflow(workflow, graph, manifest))

    async def retire_workflow(self, workflow: str) -> None:
        """Retire a workflow (admin key): new runs are refused, queued ones still run."""
        await self._do(calls.retire_workflow(workflow))

    # -- plumbing -------------------------------------------------------------------------------------------

    async def _do(self, op: calls.Op[T]) -> T:
        response: httpx.Response = await async_retrying(self.retry, self._sleep)(self._send_once, op)
        return op.parse(response)

    async def _send_once(self, op: calls.Op[Any]) -> httpx.Response:
        timeout = request_timeout(self._timeout, op.read_timeout)
        try:
            response = await self._http.request(
                op.method,
                op.path,
                params=op.params,
                json=op.json,
                headers=op.headers,
                timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
            )
        except httpx.HTTPError as exc:
            raise failure(f"{op.method} {op.path}", exc) from exc
        raise_for_answer(response)
        return response

    async def _stream_once(self, path: str, cursor: EventCursor) -> AsyncIterator[Event]:
        timeout = httpx.Timeout(self._timeout, read=READ_TIMEOUT)
        try:
            async with aconnect_sse(self._http, "GET", path, headers=cursor.headers(), timeout=timeout) as source:
                response = source.response
                if response.status_code == 204:
                    cursor.end()
                    return
                if response.status_code >= 400:
                    await response.aread()
                    raise_for_answer(response)
                async for sse in source.aiter_sse():
                    event = cursor.take(sse)
                    if event is not None:
                        yield event
                    if cursor.ended:
                        return
        except httpx.HTTPError as exc:
            raise failure(f"GET {path}", exc) from exc
        except SSEError as exc:
            raise ProtocolError(f"GET {path}: {exc}") from exc

    async def _download_once(self, output: Output, path: Path) -> None:
        try:
            async with self._http.stream("GET", output.url, follow_redirects=True) as response:
                if response.status_code >= 400:
                    await response.aread()
                    raise_for_answer(response)
                with OutputFile(output, path) as file:
                    async for chunk in response.aiter_bytes():
                        file.write(chunk)
        except httpx.HTTPError as exc:
            raise failure(f"GET {output.url}", exc) from exc
