"""The batch command's pure logic: -p values, input lines, idempotency keys, the results file, ETAs."""

from __future__ import annotations

import json
from typing import Any

import pytest

from dispatcher.cli.batchfile import (
    InputLine,
    ResultsError,
    all_succeeded,
    line_key,
    parse_input,
    parse_line,
    parse_params,
    parse_value,
    pending,
    result_record,
    scan_results,
)
from dispatcher.cli.progress import counts_line, eta_seconds, format_duration

FILE = "/data/runs.jsonl"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("7", 7),
        ("7.5", 7.5),
        ("true", True),
        ("null", None),
        ('"7"', "7"),
        ("[1, 2]", [1, 2]),
        ('{"a": 1}', {"a": 1}),
        ("a cat", "a cat"),
        ("", ""),
        ("0x10", "0x10"),
    ],
)
def test_parse_value_is_json_when_it_parses_else_text(text: str, expected: Any) -> None:
    assert parse_value(text) == expected


@pytest.mark.parametrize(
    ("pairs", "expected"),
    [
        ([], {}),
        (["prompt=a cat", "seed=7"], {"prompt": "a cat", "seed": 7}),
        (["expr=a=b"], {"expr": "a=b"}),
        (["seed=1", "seed=2"], {"seed": 2}),
        ([" width =64"], {"width": 64}),
    ],
)
def test_parse_params(pairs: list[str], expected: dict[str, Any]) -> None:
    assert parse_params(pairs) == expected


@pytest.mark.parametrize("pair", ["seed", "=7", ""])
def test_parse_params_refuses_a_pair_without_a_name(pair: str) -> None:
    with pytest.raises(ValueError, match="name=value"):
        parse_params([pair])


def test_line_keys_are_stable_and_change_with_file_line_and_content() -> None:
    key = line_key(FILE, 3, b'{"workflow": "invert"}')
    assert key == line_key(FILE, 3, b'{"workflow": "invert"}  \r')  # the same line, another line ending
    assert key.startswith("cdb-3-") and len(key) == 4 + 2 + 64 and key.isascii() and " " not in key
    others = {line_key("/data/other.jsonl", 3, b'{"workflow": "invert"}'), line_key(FILE, 4, b'{"workflow": "invert"}')}
    others.add(line_key(FILE, 3, b'{"workflow": "invert", "params": {"color": 1}}'))
    assert key not in others and len(others) == 3


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (b"not json", "not JSON"),
        (b"[1, 2]", "not a JSON object but list"),
        (b'{"params": {}}', 'no "workflow"'),
        (b'{"workflow": ""}', 'no "workflow"'),
        (b'{"workflow": 7}', 'no "workflow"'),
        (b'{"workflow": "invert", "params": [1]}', '"params" must be an object'),
        (b'{"workflow": "invert", "stream": true}', "unknown field 'stream'"),
        (b'{"workflow": "invert", "idempotency_key": 5}', "idempotency_key"),
    ],
)
def test_a_bad_line_is_an_error_of_that_line(raw: bytes, error: str) -> None:
    line = parse_line(FILE, 9, raw)
    assert line is not None and line.number == 9 and line.item is None
    assert line.error is not None and error in line.error


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        (b'{"workflow": "invert", "params": {"color": 1}}', None),
        (b'{"workflow": "invert", "idempotency_key": "mine-1", "priority": "high", "cache": true}', "mine-1"),
    ],
)
def test_a_good_line_is_a_batch_item_with_a_key(raw: bytes, key: str | None) -> None:
    line = parse_line(FILE, 2, raw + b"\n")
    assert line is not None and line.error is None and line.item is not None
    expected = {**json.loads(raw), "idempotency_key": key or line_key(FILE, 2, raw)}
    assert line.item == expected


def test_parse_input_numbers_lines_as_an_editor_does_and_skips_blank_ones() -> None:
    data = b'{"workflow": "a"}\n\n  \n{"workflow": "b"}\r\nnope\n'
    lines = parse_input(FILE, data)
    assert [(line.number, bool(line.item), bool(line.error)) for line in lines] == [
        (1, True, False),
        (4, True, False),
        (5, False, True),
    ]


def rec(line: int, status: str = "succeeded") -> bytes:
    return result_record(line, run_id=f"r{line}", status=status, outputs=[f"out/{line}/a.png"])


@pytest.mark.parametrize(
    ("data", "lines", "whole", "torn"),
    [
        (b"", [], 0, False),
        (rec(1) + rec(2), [1, 2], len(rec(1) + rec(2)), False),
        (rec(1) + rec(2)[:-1], [1], len(rec(1)), True),  # no newline yet
        (rec(1) + rec(2)[:10], [1], len(rec(1)), True),  # cut mid-line
        (rec(1) + b"\0\0\0\0", [1], len(rec(1)), True),  # a crash left zeros
        (rec(1) + b"\0\0\0\0\n", [1], len(rec(1)), True),
        (rec(1) + b"\n" + rec(3), [1, 3], len(rec(1)) + 1 + len(rec(3)), False),  # a blank line is no harm
    ],
)
def test_scan_results_keeps_whole_lines_and_finds_a_torn_last_one(
    data: bytes, lines: list[int], whole: int, torn: bool
) -> None:
    scan = scan_results(data)
    assert sorted(scan.records) == lines and scan.whole_bytes == whole and scan.torn is torn


@pytest.mark.parametrize("bad", [b"garbage\n", b'{"line": "1"}\n', b'{"line": true}\n', b"[1]\n"])
def test_scan_results_refuses_a_bad_line_before_the_last(bad: bytes) -> None:
    with pytest.raises(ResultsError):
        scan_results(rec(1) + bad + rec(2))


def test_result_record_is_one_compact_line() -> None:
    data = result_record(7, run_id=None, status="failed", error={"type": "input", "detail": "not JSON\nat all"})
    assert data.endswith(b"\n") and data.count(b"\n") == 1
    assert json.loads(data) == {
        "line": 7,
        "run_id": None,
        "status": "failed",
        "outputs": [],
        "error": {"type": "input", "detail": "not JSON\nat all"},
    }


def test_pending_and_all_succeeded() -> None:
    lines = [InputLine(1, item={}), InputLine(2, error="x"), InputLine(3, item={})]
    records: dict[int, dict[str, Any]] = {1: {"status": "succeeded"}, 2: {"status": "failed"}}
    assert [line.number for line in pending(lines, records)] == [3]
    assert not all_succeeded(lines, records)
    assert all_succeeded(lines[:1], records)


@pytest.mark.parametrize(
    ("left", "rate", "api_eta", "expected"),
    [(0, None, None, 0.0), (10, 2.0, None, 5.0), (10, 2.0, 30.0, 30.0), (10, None, None, None), (10, 0.0, None, None)],
)
def test_eta_seconds(left: int, rate: float | None, api_eta: float | None, expected: float | None) -> None:
    assert eta_seconds(left, rate, api_eta) == expected


@pytest.mark.parametrize(
    ("seconds", "text"), [(None, "?"), (0, "0s"), (42.4, "42s"), (185, "3m05s"), (3720, "1h02m"), (-3, "0s")]
)
def test_format_duration(seconds: float | None, text: str) -> None:
    assert format_duration(seconds) == text


def test_counts_line() -> None:
    assert counts_line({"running": 2, "succeeded": 10}) == "queued 0 · running 2 · succeeded 10 · failed 0"
