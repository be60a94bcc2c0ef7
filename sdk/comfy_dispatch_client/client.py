"""The blocking client: ``Client(api_url, api_key)``, one method per thing a producer of runs does."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import httpx
from httpx_sse import SSEError, connect_sse

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
from comfy_dispatch_client.retrying import RetryPolicy, backoff, retry_after_of, retrying
from comfy_dispatch_client.streaming import READ_TIMEOUT, EventCursor
from comfy_dispatch_client.transport import (
    DEFAULT_TIMEOUT,
    client_options,
    failure,
    raise_for_answer,
    request_timeout,
)

T = TypeVar("T")


class Client:
    """A client of the Comfy Dispatch API (blocking). Use it as a context manager, or call :meth:`close`.

    ``api_url`` and ``api_key`` default to ``COMFY_DISPATCH_API_URL`` (else ``http://127.0.0.1:8000``)
    and ``COMFY_DISPATCH_API_KEY`` from ``env`` (``os.environ`` by default). Connection failures, 429
    and 503 are retried as ``retry`` says; every submission carries an Idempotency-Key, so a retry
    never makes a second run. ``transport`` and ``sleep`` are for tests (``httpx.MockTransport``, a
    recorder of waits).
    """

    def __init__(
        self,
        api_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        env: Mapping[str, str] | None = None,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.config = ClientConfig.resolve(api_url, api_key, env)
        self.retry = retry or RetryPolicy()
        self._timeout = timeout
        self._sleep = sleep
        self._http = httpx.Client(transport=transport, **client_options(self.config, timeout))

    def __enter__(self) -> Client:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # -- runs -----------------------------------------------------------------------------------------------

    def submit(
        self,
        workflow: str,
        params: Mapping[str, Any] | None = None,
        *,
        priority: str | None = None,
        idempotency_key: str | None = None,
        **options: Any,
    ) -> Run:
        """Queue a run of ``workflow``; ``options`` are the native ones (``cache``, ``callback_urls``,
        ``timeout_seconds``). Without ``idempotency_key`` a uuid4 is sent, the same on every retry."""
        op = calls.submit(workflow, params, priority=priority, idempotency_key=idempotency_key, options=options)
        return self._do(op)

    def get(self, run_id: str) -> Run:
        return self._do(calls.get_run(run_id))

    def wait(self, run_id: str, timeout: float | None = None) -> Run:
        """The run once it has ended (succeeded, failed or canceled), by long polls of at most 300 s each.

        WaitTimeout (with the run as last seen) if it has not ended within ``timeout`` seconds (None: no limit).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            started = time.monotonic()
            left = calls.MAX_WAIT_SECONDS if deadline is None else deadline - started
            run = self._do(calls.get_run(run_id, wait=left))
            if run.ended:
                return run
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                raise WaitTimeout(run, timeout or 0.0)
            if now - started < calls.MIN_POLL_SECONDS:  # an API that did not hold the poll: do not spin
                self._sleep(calls.MIN_POLL_SECONDS)

    def run(
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
        run = self.submit(workflow, params, priority=priority, idempotency_key=idempotency_key, **options)
        run = run if run.ended else self.wait(run.id, timeout)
        if not run.succeeded:
            raise RunFailed(run)
        return run

    def cancel(self, run_id: str) -> Run:
        """Cancel a run (a queued one never starts, a running one is interrupted); Conflict if it had ended."""
        return self._do(calls.cancel_run(run_id))

    def events(self, run_id: str, *, last_event_id: str | None = None) -> Iterator[Event]:
        """The run's events until its terminal one (``done``, ``error``, ``canceled``), from the start or after
        ``last_event_id``. A connection that drops, or an API that restarts, is reconnected with ``Last-Event-ID``:
        no event is lost or repeated."""
        cursor = EventCursor(last_event_id)
        path = calls.events_path(run_id)
        while not cursor.ended:
            error: DispatchError | None = None
            try:
                yield from self._stream_once(path, cursor)
            except RETRYABLE_ERRORS as exc:
                error = exc
            if cursor.ended:
                return
            lost = cursor.lost()
            if lost >= self.retry.attempts:
                raise error or ConnectionFailed(f"the events of run {run_id} kept ending before the run's end")
            self._sleep(backoff(self.retry, lost, retry_after_of(error)))

    def download(self, run: Run | str, folder: str | os.PathLike[str]) -> list[Path]:
        """Write each output of ``run`` (a Run, or a run id to read first) to ``folder``/its file name, atomically;
        the paths, in the order of ``run.outputs``."""
        if isinstance(run, str):
            run = self.get(run)
        paths = []
        for output in run.outputs:
            path = target_path(Path(folder), output.filename)
            retrying(self.retry, self._sleep)(self._download_once, output, path)
            paths.append(path)
        return paths

    def list_runs(
        self,
        status: str | None = None,
        workflow: str | None = None,
        since: datetime | float | str | None = None,
        limit: int = calls.DEFAULT_PAGE,
        cursor: str | None = None,
    ) -> RunPage:
        """One page of the tenant's runs, newest first: at most ``limit``, after ``cursor`` (the ``next_cursor``
        of the page before). ``since``: a datetime, Unix seconds or an RFC 3339 string."""
        return self._do(calls.list_runs(status=status, workflow=workflow, since=since, limit=limit, cursor=cursor))

    def iter_runs(
        self,
        status: str | None = None,
        workflow: str | None = None,
        since: datetime | float | str | None = None,
        *,
        page_size: int = calls.DEFAULT_PAGE,
        max_runs: int | None = None,
    ) -> Iterator[Run]:
        """Every run :meth:`list_runs` finds, page after page (``page_size`` each); at most ``max_runs``.

        A filtered page may hold fewer runs than asked for, none even, and still not be the last."""
        cursor: str | None = None
        count = 0
        while (size := calls.next_page_size(page_size, max_runs, count)) > 0:
            page = self.list_runs(status, workflow, since, size, cursor)
            yield from page.runs[:size]
            count += min(size, len(page.runs))
            if not page.next_cursor:
                return
            cursor = page.next_cursor

    # -- batches --------------------------------------------------------------------------------------------

    def submit_many(
        self,
        items: Iterable[RunRequest | Mapping[str, Any]],
        *,
        chunk_size: int = MAX_CHUNK,
        on_batch_done_url: str | None = None,
    ) -> BatchSubmission:
        """Submit runs through the batch endpoint, ``chunk_size`` (at most 1000) per request; each item's answer
        in input order. Items refused for rate are sent again as the API allows; other refusals are in the
        items' ``error``. An item without ``idempotency_key`` gets a uuid4."""
        plan = BatchPlan(items, chunk_size=chunk_size, policy=self.retry)
        while (chunk := plan.next_chunk()) is not None:
            if chunk.delay:
                self._sleep(chunk.delay)
            try:
                answer = self._do(calls.submit_batch(chunk.items, on_batch_done_url=on_batch_done_url))
            except BadRequest as exc:
                if exc.status != 413:
                    raise
                plan.too_large(chunk, exc)
                continue
            plan.take_answer(chunk, answer)
        return plan.result()

    def get_batch(self, batch_id: str, *, limit: int | None = None, cursor: str | None = None) -> Batch:
        """A batch: its counts, and one page of its runs (``next_cursor`` for the next)."""
        return self._do(calls.get_batch(batch_id, limit=limit, cursor=cursor))

    def batch_runs(self, batch_id: str, *, page_size: int = 500) -> Iterator[Run]:
        """Every run of a batch, page after page."""
        cursor: str | None = None
        while True:
            batch = self.get_batch(batch_id, limit=page_size, cursor=cursor)
            yield from batch.runs
            if not batch.next_cursor or not batch.runs:
                return
            cursor = batch.next_cursor

    def cancel_batch(self, batch_id: str) -> Batch:
        """Cancel every run of the batch that has not ended; the batch as it is then."""
        return self._do(calls.cancel_batch(batch_id))

    # -- workflows ------------------------------------------------------------------------------------------

    def list_workflows(self) -> list[Workflow]:
        """Every workflow that takes runs, at its latest version."""
        return self._do(calls.list_workflows())

    def get_workflow(self, workflow: str, version: int | None = None) -> Workflow:
        """A workflow's latest version (or ``version``) with its manifest and graph."""
        return self._do(calls.get_workflow(workflow, version))

    def workflow_versions(self, workflow: str) -> list[WorkflowVersion]:
        """Every published version of a workflow, oldest first."""
        return self._do(calls.workflow_versions(workflow))

    def publish_workflow(
        self, workflow: str, graph: Mapping[str, Any], manifest: Mapping[str, Any] | None = None
    ) -> Workflow:
        """Publish ``graph`` (API or UI format) with ``manifest`` (None: inferred) as the workflow's new latest
        version (admin key); the same graph and manifest as the latest publish nothing and give it back."""
        return self._do(calls.publish_workflow(workflow, graph, manifest))

    def retire_workflow(self, workflow: str) -> None:
        """Retire a workflow (admin key): new runs are refused, queued ones still run."""
        self._do(calls.retire_workflow(workflow))

    # -- plumbing -------------------------------------------------------------------------------------------

    def _do(self, op: calls.Op[T]) -> T:
        response = retrying(self.retry, self._sleep)(self._send_once, op)
        return op.parse(response)

    def _send_once(self, op: calls.Op[Any]) -> httpx.Response:
        timeout = request_timeout(self._timeout, op.read_timeout)
        try:
            response = self._http.request(
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

    def _stream_once(self, path: str, cursor: EventCursor) -> Iterator[Event]:
        timeout = httpx.Timeout(self._timeout, read=READ_TIMEOUT)
        try:
            with connect_sse(self._http, "GET", path, headers=cursor.headers(), timeout=timeout) as source:
                response = source.response
                if response.status_code == 204:
                    cursor.end()
                    return
                if response.status_code >= 400:
                    response.read()
                    raise_for_answer(response)
                for sse in source.iter_sse():
                    event = cursor.take(sse)
                    if event is not None:
                        yield event
                    if cursor.ended:
                        return
        except httpx.HTTPError as exc:
            raise failure(f"GET {path}", exc) from exc
        except SSEError as exc:
            raise ProtocolError(f"GET {path}: {exc}") from exc

    def _download_once(self, output: Output, path: Path) -> None:
        try:
            with self._http.stream("GET", output.url, follow_redirects=True) as response:
                if response.status_code >= 400:
                    response.read()
                    raise_for_answer(response)
                with OutputFile(output, path) as file:
                    for chunk in response.iter_bytes():
                        file.write(chunk)
        except httpx.HTTPError as exc:
            raise failure(f"GET {output.url}", exc) from exc
