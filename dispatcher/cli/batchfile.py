"""The files of ``comfy-dispatch batch``, as plain functions: input lines, their idempotency keys, the results file.

An input file holds one run per line, ``{"workflow": ..., "params": {...}}`` (``priority``,
``idempotency_key`` and the native run options, ``version`` among them, are optional). Each line gets an idempotency key
derived from the file's resolved path, the line's number and a hash of its content, so running the
same command again (after a crash, a SIGKILL, a reboot) finds the runs it had made instead of
making new ones, while an edited line is a new run.

The results file holds one JSON object per finished line, ``{"line", "run_id", "status", "outputs",
"error"}``, each written whole (one ``write`` of the full line, then fsync). Only the last line can
be torn, by a crash mid-write: :func:`scan_results` finds where the whole lines end, and the
command truncates the rest before it appends.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

KEY_PREFIX = "cdb"
"""Idempotency keys derived by the batch command start with this, so they are told apart from a caller's."""
RUN_FIELDS = frozenset(
    {"workflow", "params", "priority", "idempotency_key", "callback_urls", "cache", "timeout_seconds", "version"}
)
"""What an input line may hold: a batch item's fields (``POST /v1/runs/batch``)."""
SUCCEEDED = "succeeded"


class ResultsError(ValueError):
    """Raised when a results file has a line that is not a result, other than a torn last one."""


def parse_value(text: str) -> Any:
    """A ``-p name=value`` value: its JSON when it parses (``7`` an int, ``true``, ``[1, 2]``), else the text."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_params(pairs: Iterable[str]) -> dict[str, Any]:
    """``["prompt=a cat", "seed=7"]`` as ``{"prompt": "a cat", "seed": 7}``; ValueError naming a pair without ``=``."""
    params: dict[str, Any] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ValueError(f"-p takes name=value, not {pair!r}")
        params[name] = parse_value(value)
    return params


def line_key(file_id: str, number: int, content: bytes) -> str:
    """The idempotency key of line ``number`` (from 1) of the input file ``file_id`` (its resolved path).

    The same file, line and content give the same key in any process, on any day; another content
    gives another key (an edited line is a new run). Printable ASCII, 81 characters.
    """
    content_hash = hashlib.sha256(content.strip()).hexdigest()
    digest = hashlib.sha256(f"{file_id}\n{number}\n{content_hash}".encode()).hexdigest()
    return f"{KEY_PREFIX}-{number}-{digest}"[:255]


@dataclass(frozen=True)
class InputLine:
    """One line of the input file: the batch item to submit, or why there is none (``error``)."""

    number: int
    item: dict[str, Any] | None = None
    error: str | None = None


def parse_line(file_id: str, number: int, raw: bytes) -> InputLine | None:
    """Line ``number`` (from 1) as a batch item with its idempotency key; None for a blank line (no run)."""
    text = raw.strip()
    if not text:
        return None
    try:
        data = json.loads(text)
    except ValueError as exc:
        return InputLine(number, error=f"not JSON: {exc}")
    if not isinstance(data, dict):
        return InputLine(number, error=f"not a JSON object but {type(data).__name__}")
    workflow = data.get("workflow")
    if not isinstance(workflow, str) or not workflow:
        return InputLine(number, error='no "workflow" (a workflow id)')
    params = data.get("params", {})
    if not isinstance(params, dict):
        return InputLine(number, error='"params" must be an object')
    unknown = sorted(set(data) - RUN_FIELDS)
    if unknown:
        return InputLine(number, error=f"unknown field {unknown[0]!r}; a line takes {', '.join(sorted(RUN_FIELDS))}")
    key = data.get("idempotency_key")
    if key is not None and (not isinstance(key, str) or not key):
        return InputLine(number, error='"idempotency_key" must be a non-empty string')
    item = dict(data)
    item["idempotency_key"] = key or line_key(file_id, number, text)
    return InputLine(number, item=item)


def parse_input(file_id: str, data: bytes) -> list[InputLine]:
    """Every non-blank line of an input file, numbered from 1 as an editor shows them."""
    lines = (parse_line(file_id, number, raw) for number, raw in enumerate(data.split(b"\n"), start=1))
    return [line for line in lines if line is not None]


@dataclass
class ResultsScan:
    """What a results file holds: each finished line's record, and the byte length of its whole lines."""

    records: dict[int, dict[str, Any]] = field(default_factory=dict)
    whole_bytes: int = 0
    torn: bool = False
    """The file ends with a torn line (after ``whole_bytes``), to be truncated away."""


def scan_results(data: bytes) -> ResultsScan:
    """The records of a results file's content; ResultsError for a bad line other than a torn last one.

    A line is whole when it ends with a newline and holds a JSON object with an integer ``line``. The
    last line may be torn (no newline, or not JSON: the process died mid-write); any other bad line
    means the file is not one this command wrote.
    """
    scan = ResultsScan()
    offset = 0
    while offset < len(data):
        end = data.find(b"\n", offset)
        chunk = data[offset:] if end < 0 else data[offset:end]
        last = end < 0 or end + 1 == len(data)
        record = _record(chunk)
        if end < 0 or (record is None and last and chunk.strip()):
            scan.torn = True  # a crash mid-write: the line is cut, or holds what was never written (zeros)
            break
        if record is not None:
            scan.records[int(record["line"])] = record
        elif chunk.strip():
            raise ResultsError(f"a line of the results file is not a result: {chunk[:80]!r}")
        offset = end + 1
        scan.whole_bytes = offset
    return scan


def _record(chunk: bytes) -> dict[str, Any] | None:
    try:
        record = json.loads(chunk)
    except ValueError:
        return None
    if not isinstance(record, dict) or not isinstance(record.get("line"), int) or isinstance(record["line"], bool):
        return None
    return record


def pending(lines: Iterable[InputLine], done: Mapping[int, Any]) -> list[InputLine]:
    """The input lines without a result yet, in file order."""
    return [line for line in lines if line.number not in done]


def result_record(
    line: int,
    *,
    run_id: str | None,
    status: str,
    outputs: list[str] | None = None,
    error: Any = None,
) -> bytes:
    """One results line, newline included, as one compact JSON object."""
    record = {"line": line, "run_id": run_id, "status": status, "outputs": outputs or [], "error": error}
    return (json.dumps(record, separators=(",", ":"), ensure_ascii=False) + "\n").encode()


def all_succeeded(lines: Iterable[InputLine], records: Mapping[int, Mapping[str, Any]]) -> bool:
    """Whether every input line has a result, and every one succeeded."""
    return all(records.get(line.number, {}).get("status") == SUCCEEDED for line in lines)
