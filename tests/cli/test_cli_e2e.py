"""``comfy-dispatch run`` and ``batch`` as child processes against a whole stack (fake ComfyUI, API, workers)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli.helpers import assert_inverted, cli, invert_line, read_results, run_records
from tests.support_stack import LocalStack

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


def test_run_waits_downloads_and_prints_the_id_and_files(redis_url: str, tmp_path: Path) -> None:
    with LocalStack(redis_url, tmp_path, workers=1) as stack:
        out = tmp_path / "out"
        args = ["run", "invert", "-p", "width=8", "-p", "height=8", "-p", "color=1193046", "--wait", "--out", str(out)]
        done = cli(args, stack.api)
        assert done.returncode == 0, (done.stdout, done.stderr, stack.logs())
        run_id, *files = done.stdout.splitlines()
        assert len(files) == 1 and Path(files[0]).parent == out
        assert_inverted(Path(files[0]), 1193046)
        assert [p.name for p in out.iterdir()] == [Path(files[0]).name]  # no temporary file left

        small = ["-p", "width=8", "-p", "height=8"]
        shown = cli(["run", "invert", "-p", "color=0", *small, "--wait", "--json"], stack.api)
        assert shown.returncode == 0, shown.stderr
        view = json.loads(shown.stdout)
        assert view["status"] == "succeeded" and view["id"] != run_id and view["params"]["color"] == 0


def test_run_without_wait_prints_the_queued_run_and_usage_errors_exit_2(redis_url: str, tmp_path: Path) -> None:
    with LocalStack(redis_url, tmp_path, workers=1, start_workers=False) as stack:
        queued = cli(["run", "invert", "-p", "width=8", "--json"], stack.api)
        assert queued.returncode == 0, queued.stderr
        assert json.loads(queued.stdout)["status"] == "queued"
        for args, message in [
            (["run", "invert", "-p", "color=red"], "color"),
            (["run", "no-such-workflow"], "404"),
            (["run", "invert", "-p", "color"], "name=value"),
            (["run", "invert", "--priority", "urgent"], "--priority"),
        ]:
            done = cli(args, stack.api)
            assert done.returncode == 2, (args, done.stdout, done.stderr)
            (line,) = done.stderr.strip().splitlines()
            assert line.startswith("comfy-dispatch: ") and message in line, line


def test_batch_writes_a_result_per_line_and_a_second_run_makes_no_run_again(redis_url: str, tmp_path: Path) -> None:
    lines = [invert_line(i * 0x010101) for i in range(30)]
    lines[7] = "this is not json"
    lines[11] = json.dumps({"workflow": "invert", "params": {"color": "red"}})
    source = tmp_path / "runs.jsonl"
    source.write_text("\n".join(lines) + "\n")
    results, outputs = tmp_path / "results.jsonl", tmp_path / "downloads"
    args = ["batch", str(source), "--out", str(results), "--outputs", str(outputs), "--concurrency", "4", "--json"]
    with LocalStack(redis_url, tmp_path, workers=2) as stack:
        done = cli(args, stack.api)
        assert done.returncode == 1, (done.stdout, done.stderr, stack.logs())  # two lines failed
        summary = json.loads(done.stdout)
        assert summary == {"lines": 30, "succeeded": 28, "failed": 2, "left": 0, "results": str(results)}
        records = {r["line"]: r for r in read_results(results)}
        assert sorted(records) == list(range(1, 31))
        assert records[8]["status"] == "failed" and records[8]["error"]["type"] == "input"
        assert records[12]["status"] == "failed" and records[12]["error"]["status"] == 422
        for number, record in records.items():
            if number in (8, 12):
                continue
            assert record["status"] == "succeeded", record
            (path,) = record["outputs"]
            assert Path(path).parent == outputs / str(number)
            assert_inverted(Path(path), (number - 1) * 0x010101)
        assert run_records(redis_url) == 28

        again = cli(args, stack.api)
        assert again.returncode == 1 and json.loads(again.stdout) == summary
        assert len(read_results(results)) == 30 and run_records(redis_url) == 28


def test_batch_usage_errors_exit_2_with_one_line(tmp_path: Path) -> None:
    (tmp_path / "bad-results.jsonl").write_text('{"line": 1}\nnot a result\n{"line": 2}\n')
    (tmp_path / "runs.jsonl").write_text(invert_line(1) + "\n")
    cases = [
        (["batch", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "r.jsonl")], "cannot read"),
        (["batch", str(tmp_path / "runs.jsonl"), "--out", str(tmp_path / "bad-results.jsonl")], "not a results file"),
        (["batch", str(tmp_path / "runs.jsonl"), "--out", str(tmp_path / "r.jsonl"), "--concurrency", "0"], "--concur"),
        (["batch", str(tmp_path / "runs.jsonl"), "--out", str(tmp_path / "r.jsonl"), "--api-url", "nope"], "api_url"),
    ]
    for args, message in cases:
        done = cli(args, "http://127.0.0.1:9")
        assert done.returncode == 2, (args, done.stderr)
        (line,) = done.stderr.strip().splitlines()
        assert message in line, line
