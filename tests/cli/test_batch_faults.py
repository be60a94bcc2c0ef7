"""``comfy-dispatch batch`` SIGKILLed twice mid-way, then run again: every line once, every run once, every file right.

A thousand lines of the invert workflow (each its own colour) through a stack of three fake ComfyUIs
that take no time. The command is killed after about 200 results lines, started again and killed after
about 600 (possibly mid-write, mid-download), then started again and left to finish.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from tests.cli.helpers import assert_inverted, invert_line, read_results, run_records, start_cli
from tests.support_stack import LocalStack

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(180)]

LINES = 1000


def colour(number: int) -> int:
    """The colour of input line ``number`` (from 1): distinct for every line."""
    return (number * 0x010203) & 0xFFFFFF


def lines_in(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def run_until(args: list[str], api: str, log: Path, results: Path, kill_at: int | None, timeout: float = 90) -> int:
    """Start the command; SIGKILL it once ``results`` has ``kill_at`` lines (None: let it end). Its exit code."""
    process = start_cli(args, api, log)
    deadline = time.monotonic() + timeout
    try:
        while process.poll() is None and time.monotonic() < deadline:
            if kill_at is not None and lines_in(results) >= kill_at:
                process.send_signal(signal.SIGKILL)
                process.wait(10)
                return -signal.SIGKILL
            time.sleep(0.005)
        if process.poll() is None:
            raise TimeoutError(f"batch still running after {timeout} s:\n{log.read_text()}")
        return process.returncode
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


def test_a_batch_killed_twice_then_run_again_makes_each_run_once(redis_url: str, tmp_path: Path) -> None:
    source = tmp_path / "runs.jsonl"
    source.write_text("".join(invert_line(colour(n)) + "\n" for n in range(1, LINES + 1)))
    results, outputs, log = tmp_path / "results.jsonl", tmp_path / "downloads", tmp_path / "batch.log"
    args = ["batch", str(source), "--out", str(results), "--outputs", str(outputs), "--concurrency", "8"]
    with LocalStack(redis_url, tmp_path, workers=3) as stack:
        first = run_until(args, stack.api, log, results, kill_at=200)
        assert first == -signal.SIGKILL, f"the first run ended by itself ({first}) before 200 lines:\n{log.read_text()}"
        second = run_until(args, stack.api, log, results, kill_at=600)
        assert second == -signal.SIGKILL, f"the second run ended by itself ({second}):\n{log.read_text()}"
        assert 200 <= lines_in(results) < LINES
        last = run_until(args, stack.api, log, results, kill_at=None)
        assert last == 0, (log.read_text(), stack.logs())

        assert run_records(redis_url) == LINES
        executed = sum(int(fake.stats()["executed"]) for fake in stack.fakes)  # type: ignore[call-overload]
        assert executed == LINES, "a run executed twice"

    records = read_results(results)
    assert len(records) == LINES
    assert sorted(r["line"] for r in records) == list(range(1, LINES + 1))
    assert len({r["run_id"] for r in records}) == LINES
    for record in records:
        assert record["status"] == "succeeded" and record["error"] is None, record
        (path,) = record["outputs"]
        assert Path(path).parent == outputs / str(record["line"])
        assert_inverted(Path(path), colour(record["line"]))
    leftovers = [p for p in outputs.rglob("*") if p.is_file() and p.name.endswith(".part")]
    assert leftovers == []
    assert sorted(int(p.name) for p in outputs.iterdir()) == list(range(1, LINES + 1))
