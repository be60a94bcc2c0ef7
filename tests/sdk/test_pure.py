"""The SDK's pure pieces: backoff, Retry-After, query values, file names, SSE frames without data."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from httpx_sse import ServerSentEvent

from comfy_dispatch_client import DownloadFailed, RetryPolicy
from comfy_dispatch_client.calls import get_run, next_page_size, since_param
from comfy_dispatch_client.downloads import remove_partial, target_path
from comfy_dispatch_client.errors import parse_retry_after
from comfy_dispatch_client.retrying import backoff
from comfy_dispatch_client.streaming import EventCursor

POLICY = RetryPolicy(base=0.5, cap=8.0)


@pytest.mark.parametrize(
    ("retry", "retry_after", "rand", "expected"),
    [
        (1, None, 0.0, 0.25),
        (1, None, 1.0, 0.5),
        (3, None, 1.0, 2.0),
        (10, None, 1.0, 8.0),  # capped
        (10, None, 0.0, 4.0),
        (1, 3.0, 0.0, 3.0),  # never sooner than Retry-After
        (1, 3.0, 1.0, 3.5),  # spread by the backoff window at most
        (5, 3.0, 1.0, 6.0),  # ... and by Retry-After at most
    ],
)
def test_backoff(retry: int, retry_after: float | None, rand: float, expected: float) -> None:
    assert backoff(POLICY, retry, retry_after, rand=lambda: rand) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("", None),
        ("7", 7.0),
        (" 0 ", 0.0),
        ("soon", None),
        ("Wed, 21 Oct 2015 07:28:10 GMT", 10.0),
        ("Wed, 21 Oct 2015 07:27:00 GMT", 0.0),  # in the past: at once
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    now = datetime(2015, 10, 21, 7, 28, 0, tzinfo=UTC).timestamp()
    assert parse_retry_after(value, now=now) == expected


@pytest.mark.parametrize(
    ("since", "expected"),
    [
        (1700000000, "1700000000"),
        (1700000000.5, "1700000000.5"),
        (datetime(2025, 1, 31, 12, 0), "2025-01-31T12:00:00+00:00"),
        (datetime(2025, 1, 31, 12, 0, tzinfo=timezone(timedelta(hours=2))), "2025-01-31T12:00:00+02:00"),
        (" 2025-01-31T12:00:00Z ", "2025-01-31T12:00:00Z"),
    ],
)
def test_since_param(since: datetime | float | str, expected: str) -> None:
    assert since_param(since) == expected


@pytest.mark.parametrize("since", ["", True])
def test_since_param_refuses_what_is_no_time(since: object) -> None:
    with pytest.raises(ValueError):
        since_param(since)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("page_size", "max_items", "got", "expected"),
    [(100, None, 5000, 100), (100, 250, 200, 50), (100, 250, 250, 0), (5, 0, 0, 0), (3, 4, 3, 1), (3, 4, 9, 0)],
)
def test_next_page_size(page_size: int, max_items: int | None, got: int, expected: int) -> None:
    assert next_page_size(page_size, max_items, got) == expected


@pytest.mark.parametrize(
    ("wait", "param", "read_timeout"),
    [(0.0, None, None), (12.5, "12.5", 42.5), (1000, "300", 330.0), (-1, None, None)],
)
def test_a_long_poll_asks_at_most_300_s_and_reads_longer_than_it_waits(
    wait: float, param: str | None, read_timeout: float | None
) -> None:
    op = get_run("r1", wait=wait)
    assert (op.params or {}).get("wait") == param and op.read_timeout == read_timeout


@pytest.mark.parametrize(
    ("name", "expected"),
    [("a.png", "a.png"), ("sub/dir/a.png", "a.png"), ("..\\..\\a.png", "a.png"), ("/etc/passwd", "passwd")],
)
def test_target_path_keeps_the_last_part_of_a_name(name: str, expected: str) -> None:
    assert target_path(Path("/out"), name) == Path("/out") / expected


@pytest.mark.parametrize("name", ["", ".", "..", "a/", "x\0y"])
def test_target_path_refuses_what_is_no_file_name(name: str) -> None:
    with pytest.raises(DownloadFailed):
        target_path(Path("/out"), name)


def test_remove_partial_deletes_only_unfinished_downloads(tmp_path: Path) -> None:
    (tmp_path / ".a.png.x1y2.part").write_bytes(b"half")
    (tmp_path / "a.png").write_bytes(b"whole")
    assert remove_partial(tmp_path) == 1 and remove_partial(tmp_path / "missing") == 0
    assert [p.name for p in tmp_path.iterdir()] == ["a.png"]


def test_an_event_cursor_skips_frames_without_data_and_remembers_the_last_id() -> None:
    cursor = EventCursor("0-1")
    assert cursor.headers() == {"Last-Event-ID": "0-1"}
    assert cursor.take(ServerSentEvent(event="queued", data="{}", id="1-0")) is not None
    assert cursor.take(ServerSentEvent(data="", id="1-0")) is None  # a keep-alive's blank line
    event = cursor.take(ServerSentEvent(event="done", data='{"status": "succeeded"}', id="2-0"))
    assert event is not None and event.terminal and cursor.ended
    assert cursor.headers() == {"Last-Event-ID": "2-0"}
