"""The work of ``comfy-dispatch batch`` once its files are open: submit the lines left, follow their runs,
fetch their outputs, and write each line's result as soon as it is known.

Lines go out through ``POST /v1/runs/batch``, up to 1,000 per request, each with its idempotency key:
a line whose run a killed earlier process had made gets that run back (``replayed``), and is followed
like the others. Runs are followed by :class:`~dispatcher.cli.follow.Tracker`; ended ones are handed to
a pool of ``concurrency`` threads that download their outputs (to ``DIR/<line>/<filename>``, each
file written aside and renamed in). The main thread alone writes the results file.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from comfy_dispatch_client import Client, DispatchError, Run
from comfy_dispatch_client.downloads import remove_partial
from dispatcher.cli.batchfile import SUCCEEDED, InputLine, pending, result_record
from dispatcher.cli.follow import Tracker
from dispatcher.cli.progress import BatchProgress, eta_seconds
from dispatcher.cli.remote import message_of
from dispatcher.cli.results import ResultsFile

CHUNK = 1000
"""Lines per batch request (the API's most)."""
SEND_AGAIN_LATER = frozenset({429, 503})
"""Refusals of an item that are no verdict on the line: it gets no result, and the next start sends it again."""
POLL_MIN_SECONDS = 0.2
POLL_MAX_SECONDS = 2.0


@dataclass(frozen=True)
class Summary:
    """How the lines of the input file stand at the end: every line is succeeded, failed or left (no result)."""

    lines: int
    succeeded: int
    failed: int
    left: int
    results: str

    @property
    def ok(self) -> bool:
        return self.left == 0 and self.failed == 0

    def as_json(self) -> dict[str, Any]:
        return {
            "lines": self.lines,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "left": self.left,
            "results": self.results,
        }

    def text(self) -> str:
        text = f"{self.lines} lines: {self.succeeded} succeeded, {self.failed} failed"
        if self.left:
            text += f", {self.left} left (run the same command again to send them)"
        return f"{text}; results in {self.results}"


class BatchRunner:
    """One run of the batch command over ``lines``, given the records the results file held already."""

    def __init__(
        self,
        client: Client,
        results: ResultsFile,
        records: Mapping[int, Mapping[str, Any]],
        lines: Sequence[InputLine],
        *,
        outputs: Path | None,
        concurrency: int,
        progress: BatchProgress,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.client = client
        self.results = results
        self.records: dict[int, Mapping[str, Any]] = dict(records)
        self.lines = list(lines)
        self.outputs = outputs
        self.concurrency = concurrency
        self.progress = progress
        self.tracker = Tracker(client)
        self._sleep = sleep
        self._fetching: dict[Future[tuple[str, bytes]], int] = {}
        self._pool: ThreadPoolExecutor | None = None
        self._started = time.monotonic()
        self._finished_now = 0
        self.deferred = 0
        """Lines refused for now (rate, unavailable) after the client's retries: no result, sent again next time."""

    def run(self) -> Summary:
        todo = pending(self.lines, self.records)
        for line in todo:
            if line.error is not None:
                self._failed(line.number, {"type": "input", "detail": line.error})
        ready = [line for line in todo if line.item is not None]
        self._show()
        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="fetch") as pool:
            self._pool = pool
            try:
                polled = time.monotonic()
                for chunk in _chunks(ready, CHUNK):
                    self._submit(chunk)
                    # A long file: results of the first chunks are written while the last ones go out.
                    if time.monotonic() - polled >= POLL_MAX_SECONDS:
                        self._poll()
                        polled = time.monotonic()
                    self._collect(0)
                    self._show()
                self._follow()
            except BaseException:
                pool.shutdown(wait=False, cancel_futures=True)
                raise
        self._show()
        return self.summary()

    def summary(self) -> Summary:
        statuses = [self.records[line.number].get("status") for line in self.lines if line.number in self.records]
        succeeded = sum(1 for status in statuses if status == SUCCEEDED)
        return Summary(
            lines=len(self.lines),
            succeeded=succeeded,
            failed=len(statuses) - succeeded,
            left=len(self.lines) - len(statuses),
            results=str(self.results.path),
        )

    def _submit(self, chunk: list[InputLine]) -> None:
        answer = self.client.submit_many([line.item for line in chunk if line.item is not None])
        for line, item in zip(chunk, answer.items, strict=True):
            if item.run is not None:
                if item.run.ended:  # replayed: a process before this one made it, and it has ended since
                    self._fetch(line.number, item.run)
                else:
                    self.tracker.add(line.number, item.run)
            elif item.status in SEND_AGAIN_LATER:
                self.deferred += 1
            else:
                self._failed(line.number, item.error.problem if item.error is not None else {"status": item.status})

    def _follow(self) -> None:
        interval = POLL_MIN_SECONDS
        while len(self.tracker) or self._fetching:
            ended = self._poll()
            written = self._collect(interval)
            # Quick rounds while runs end; slower ones, up to POLL_MAX_SECONDS, while nothing moves.
            interval = POLL_MIN_SECONDS if ended or written else min(POLL_MAX_SECONDS, interval * 1.5)
            self._show()

    def _poll(self) -> int:
        """Hand the runs that ended to the download pool; how many."""
        ended = self.tracker.poll() if len(self.tracker) else []
        for line, run in ended:
            self._fetch(line, run)
        return len(ended)

    def _fetch(self, line: int, run: Run) -> None:
        assert self._pool is not None
        self._fetching[self._pool.submit(self._finish, line, run)] = line

    def _finish(self, line: int, run: Run) -> tuple[str, bytes]:
        """The status and result line of an ended run, once its outputs are stored (in a pool thread)."""
        status = run.status.value
        if self.outputs is None:
            urls = [output.url for output in run.outputs]
            return status, result_record(line, run_id=run.id, status=status, outputs=urls, error=run.error)
        folder = self.outputs / str(line)
        remove_partial(folder)  # what a killed process was writing
        try:
            paths = self.client.download(run, folder)
        except DispatchError as exc:
            error = {"type": "download", "detail": message_of(exc), "run_status": status}
            return "failed", result_record(line, run_id=run.id, status="failed", error=error)
        files = [str(path) for path in paths]
        return status, result_record(line, run_id=run.id, status=status, outputs=files, error=run.error)

    def _collect(self, timeout: float) -> int:
        """Write the results of the downloads that ended, waiting up to ``timeout`` s for one; how many."""
        if not self._fetching:
            if timeout:
                self._sleep(timeout)
            return 0
        done, _ = wait(self._fetching, timeout=timeout, return_when=FIRST_COMPLETED)
        for future in done:
            line = self._fetching.pop(future)
            self._write(line, *future.result())
        return len(done)

    def _failed(self, line: int, error: Mapping[str, Any]) -> None:
        """Write the result of a line that made no run: a bad line, or one the API refused."""
        self._write(line, "failed", result_record(line, run_id=None, status="failed", error=dict(error)))

    def _write(self, line: int, status: str, record: bytes) -> None:
        self.results.append(record)
        self.records[line] = {"status": status}
        self._finished_now += 1

    def _show(self) -> None:
        counts: Counter[str] = self.tracker.counts()
        done = 0
        for line in self.lines:
            record = self.records.get(line.number)
            if record is not None:
                done += 1
                counts["succeeded" if record.get("status") == SUCCEEDED else "failed"] += 1
        elapsed = time.monotonic() - self._started
        rate = self._finished_now / elapsed if self._finished_now and elapsed > 0 else None
        eta = eta_seconds(len(self.lines) - done, rate, self.tracker.eta())
        self.progress.update(done=done, counts=counts, rate=rate, eta=eta)


def _chunks(lines: list[InputLine], size: int) -> Iterator[list[InputLine]]:
    for start in range(0, len(lines), size):
        yield lines[start : start + size]
