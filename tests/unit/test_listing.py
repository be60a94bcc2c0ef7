"""dispatcher.listing: cursors, ``since``, and a tenant's runs read newest first in pages, on fakeredis."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from redis import Redis

from dispatcher import keys, listing
from dispatcher.connections import Connections
from dispatcher.errors import ParameterError
from dispatcher.listing import Cursor, Filters, Page, index_horizon, list_runs, parse_since
from dispatcher.runs import Run, RunStatus, new_run
from tests.unit.dispatch_helpers import Bench

T0 = 1_760_000_000.0


def raw_cursor(text: str | bytes) -> str:
    data = text.encode() if isinstance(text, str) else text
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


# -- cursors (pure) ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cursor",
    [
        Cursor(T0, "0f" * 16),
        Cursor(T0 + 0.123456, "a"),
        Cursor(1760000000.1234567, "run|with|bars"),  # only the first bar separates
        Cursor(0.0, ""),
        Cursor(1e-7, "ü-not-ascii"),
        Cursor(T0 + 1 / 3, "x"),  # every bit of the float survives
    ],
)
def test_a_cursor_survives_its_encoding(cursor: Cursor) -> None:
    text = cursor.encode()
    assert "=" not in text and "/" not in text and "+" not in text  # safe in a query string as it is
    assert Cursor.decode(text) == cursor


@pytest.mark.parametrize(
    "text",
    [
        "!!!",
        "abc",  # decodes to bytes that are not UTF-8
        raw_cursor("no bar here"),
        raw_cursor("soon|r1"),  # not a number before the bar
        raw_cursor(""),
        raw_cursor(b"\xff\xfe|r1"),
        raw_cursor("nan|r1"),  # a score no Redis range takes
        raw_cursor("inf|r1"),
        raw_cursor("-inf|r1"),
    ],
)
def test_a_cursor_the_api_never_gave_is_a_parameter_error(text: str) -> None:
    with pytest.raises(ParameterError) as caught:
        Cursor.decode(text)
    assert caught.value.param == "cursor"


# -- since (pure) -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-12-01T09:00:00Z", datetime(2026, 12, 1, 9, tzinfo=UTC).timestamp()),
        ("2026-12-01T09:00:00z", datetime(2026, 12, 1, 9, tzinfo=UTC).timestamp()),
        ("2026-12-01T10:00:00+01:00", datetime(2026, 12, 1, 9, tzinfo=UTC).timestamp()),
        ("2026-12-01T04:30:00-04:30", datetime(2026, 12, 1, 9, tzinfo=UTC).timestamp()),
        ("2026-12-01T09:00:00.250Z", datetime(2026, 12, 1, 9, tzinfo=UTC).timestamp() + 0.25),
        ("2026-12-01 09:00:00+00:00", datetime(2026, 12, 1, 9, tzinfo=UTC).timestamp()),
        (" 2026-12-01T09:00:00Z ", datetime(2026, 12, 1, 9, tzinfo=UTC).timestamp()),
        ("1760000000", 1760000000.0),
        ("1760000000.5", 1760000000.5),
        (" 42 ", 42.0),
        ("0", 0.0),
        ("1e3", 1000.0),
        ("1969-07-20T20:17:00Z", 0.0),  # before 1970: everything there is
    ],
)
def test_since_is_rfc3339_with_a_zone_or_unix_seconds(text: str, expected: float) -> None:
    assert parse_since(text) == pytest.approx(expected)


@pytest.mark.parametrize(
    "text",
    [
        "2026-12-01T09:00:00",  # naive: whose 09:00?
        "2026-12-01",
        "yesterday",
        "",
        "12:00Z",
        "2026-13-01T00:00:00Z",
        "-1",
        "-0.5",
        "inf",
        "-inf",
        "nan",
        "1e400",  # infinite once parsed
        "0001-01-01T00:00:00+01:00",  # before year 1 in UTC
        "9999-12-31T23:59:59-01:00",  # after year 9999 in UTC
    ],
)
def test_a_bad_since_is_a_parameter_error(text: str) -> None:
    with pytest.raises(ParameterError) as caught:
        parse_since(text)
    assert caught.value.param == "since"


# -- list_runs over fakeredis -----------------------------------------------------------------------------------------


def put(
    redis: Redis,
    created: float,
    *,
    tenant: str = "acme",
    workflow: str = "invert",
    status: RunStatus = RunStatus.QUEUED,
    run_id: str | None = None,
    record: bool = True,
) -> Run:
    """A run record and its index entry, as the submit script leaves them (``record`` False: expired since)."""
    run = new_run(workflow, {}, tenant=tenant, run_id=run_id, now=created)
    run.status = status
    if record:
        redis.hset(keys.run(run.id), mapping=run.to_redis())
    redis.zadd(keys.tenant_runs(tenant), {run.id: created})
    return run


def newest_first(runs: list[Run]) -> list[str]:
    return [r.id for r in sorted(runs, key=lambda r: (r.created_at, r.id), reverse=True)]


def pages(redis: Redis, tenant: str = "acme", cursor: str | None = None, **kwargs: object) -> Iterator[Page]:
    for _ in range(10_000):
        page = list_runs(redis, tenant, cursor=cursor, **kwargs)  # type: ignore[arg-type]
        yield page
        if page.next_cursor is None:
            return
        cursor = page.next_cursor
    raise AssertionError("the cursor never ended")


def every_page(redis: Redis, tenant: str = "acme", cursor: str | None = None, **kwargs: object) -> list[str]:
    return [run.id for page in pages(redis, tenant, cursor, **kwargs) for run in page.runs]


@pytest.fixture
def redis(fake_conns: Connections) -> Redis:
    return fake_conns.text


def test_no_run_is_an_empty_last_page(redis: Redis) -> None:
    assert list_runs(redis, "acme") == Page([], None)


def test_runs_come_newest_first(redis: Redis) -> None:
    runs = [put(redis, T0 + i) for i in (3, 1, 4, 0, 2)]
    page = list_runs(redis, "acme")
    assert [r.id for r in page.runs] == newest_first(runs)
    assert page.next_cursor is None
    assert page.runs[0].created_at == T0 + 4 and page.runs[0].workflow == "invert"


def test_runs_created_at_the_same_time_come_by_id(redis: Redis) -> None:
    runs = [put(redis, T0, run_id=name) for name in ("b", "d", "a", "c")] + [put(redis, T0 + 1, run_id="0")]
    assert [r.id for r in list_runs(redis, "acme").runs] == ["0", "d", "c", "b", "a"]
    assert [r.id for r in list_runs(redis, "acme").runs] == newest_first(runs)


@pytest.mark.parametrize("limit", [1, 2, 3, 4, 7, 50])
def test_pages_cover_every_run_exactly_once(redis: Redis, limit: int) -> None:
    # runs in groups created in the same instant, so page boundaries fall inside groups of ties
    runs = [put(redis, T0 + i // 4, run_id=f"r{i:02d}") for i in range(23)]
    listed = every_page(redis, limit=limit)
    assert listed == newest_first(runs)
    assert all(len(page.runs) <= limit for page in pages(redis, limit=limit))


def test_a_page_full_to_its_limit_has_a_cursor_and_the_next_one_ends(redis: Redis) -> None:
    runs = [put(redis, T0 + i) for i in range(4)]
    first = list_runs(redis, "acme", limit=4)
    assert [r.id for r in first.runs] == newest_first(runs) and first.next_cursor is not None
    assert list_runs(redis, "acme", limit=4, cursor=first.next_cursor) == Page([], None)


def test_the_cursor_says_where_the_page_stopped(redis: Redis) -> None:
    runs = [put(redis, T0 + i, run_id=f"r{i}") for i in range(5)]
    page = list_runs(redis, "acme", limit=2)
    assert page.next_cursor is not None
    assert Cursor.decode(page.next_cursor) == Cursor(runs[3].created_at, runs[3].id)


def test_runs_added_after_a_page_do_not_disturb_the_rest(redis: Redis) -> None:
    old = [put(redis, T0 + i) for i in range(6)]
    first = list_runs(redis, "acme", limit=3)
    put(redis, T0 + 100)  # newer than the cursor: the next pages do not show it
    rest = every_page(redis, limit=3, cursor=first.next_cursor) if first.next_cursor else []
    assert [r.id for r in first.runs] + rest == newest_first(old)


def test_other_tenants_runs_are_not_listed(redis: Redis) -> None:
    mine = [put(redis, T0 + i) for i in range(3)]
    put(redis, T0 + 10, tenant="other")
    assert every_page(redis) == newest_first(mine)
    assert len(every_page(redis, "other")) == 1
    assert every_page(redis, "nobody") == []


def test_index_entries_whose_records_expired_are_skipped(redis: Redis) -> None:
    kept = [put(redis, T0 + i) for i in range(0, 6, 2)]
    for i in range(1, 6, 2):
        put(redis, T0 + i, record=False)
    assert every_page(redis, limit=2) == newest_first(kept)


@pytest.mark.parametrize("status", list(RunStatus))
def test_filter_by_status(redis: Redis, status: RunStatus) -> None:
    runs = [put(redis, T0 + i, status=list(RunStatus)[i % len(RunStatus)]) for i in range(17)]
    expected = newest_first([r for r in runs if r.status is status])
    assert every_page(redis, filters=Filters(status=status), limit=2) == expected


def test_filter_by_workflow(redis: Redis) -> None:
    runs = [put(redis, T0 + i, workflow="invert" if i % 3 else "txt2img") for i in range(12)]
    assert every_page(redis, filters=Filters(workflow="txt2img"), limit=3) == newest_first(
        [r for r in runs if r.workflow == "txt2img"]
    )
    assert every_page(redis, filters=Filters(workflow="nope")) == []


def test_since_keeps_runs_created_at_or_after_it(redis: Redis) -> None:
    runs = [put(redis, T0 + i) for i in range(10)]
    assert every_page(redis, filters=Filters(since=T0 + 6), limit=3) == newest_first(runs[6:])
    assert every_page(redis, filters=Filters(since=T0 + 5.5), limit=3) == newest_first(runs[6:])
    assert every_page(redis, filters=Filters(since=T0 + 100)) == []
    assert every_page(redis, filters=Filters(since=0.0)) == newest_first(runs)


def test_filters_combine(redis: Redis) -> None:
    runs = [
        put(
            redis,
            T0 + i,
            workflow=("invert", "txt2img")[i % 2],
            status=(RunStatus.QUEUED, RunStatus.FAILED)[i % 3 == 0],
        )
        for i in range(30)
    ]
    filters = Filters(status=RunStatus.FAILED, workflow="txt2img", since=T0 + 10)
    expected = [r for r in runs if r.status is RunStatus.FAILED and r.workflow == "txt2img" and r.created_at >= T0 + 10]
    assert expected
    assert every_page(redis, filters=filters, limit=1) == newest_first(expected)


def test_a_filter_matching_nothing_looks_at_a_bounded_number_of_runs(redis: Redis) -> None:
    budget = listing.SCAN_BUDGET
    runs = [put(redis, T0 + i, run_id=f"r{i:05d}") for i in range(budget + 300)]
    oldest = runs[0]
    redis.hset(keys.run(oldest.id), "workflow", "rare")
    first = list_runs(redis, "acme", filters=Filters(workflow="rare"), limit=10)
    assert first.runs == [] and first.next_cursor is not None  # the budget ran out before the index did
    # it stopped right after the budget's last entry (the budget-th newest)
    assert Cursor.decode(first.next_cursor).run_id == runs[-budget].id
    second = list_runs(redis, "acme", filters=Filters(workflow="rare"), limit=10, cursor=first.next_cursor)
    assert [r.id for r in second.runs] == [oldest.id] and second.next_cursor is None


def test_a_filter_matching_nothing_ends_once_the_index_is_read(redis: Redis) -> None:
    budget = listing.SCAN_BUDGET
    for i in range(2 * budget + 5):
        put(redis, T0 + i)
    seen = list(pages(redis, filters=Filters(status=RunStatus.SUCCEEDED), limit=500))
    assert [len(p.runs) for p in seen] == [0, 0, 0]
    assert [p.next_cursor is None for p in seen] == [False, False, True]


@pytest.mark.parametrize("limit", [0, -1, listing.MAX_LIMIT + 1, 10_000])
def test_limit_out_of_bounds_is_a_parameter_error(redis: Redis, limit: int) -> None:
    with pytest.raises(ParameterError) as caught:
        list_runs(redis, "acme", limit=limit)
    assert caught.value.param == "limit"


@pytest.mark.parametrize("limit", [1, listing.MAX_LIMIT])
def test_limit_bounds_are_inclusive(redis: Redis, limit: int) -> None:
    runs = [put(redis, T0 + i) for i in range(3)]
    assert [r.id for r in list_runs(redis, "acme", limit=limit).runs] == newest_first(runs)[:limit]


def test_a_bad_cursor_is_a_parameter_error(redis: Redis) -> None:
    put(redis, T0)
    with pytest.raises(ParameterError):
        list_runs(redis, "acme", cursor=raw_cursor("nan|x"))


# -- the index, as the scripts keep it --------------------------------------------------------------------------------


def test_submitted_runs_are_indexed_by_creation_time(fake_conns: Connections) -> None:
    bench = Bench.build(fake_conns)
    submitted = [bench.submit(tenant="acme") for _ in range(3)]
    bench.submit(tenant="other")
    index = fake_conns.text.zrange(keys.tenant_runs("acme"), 0, -1, withscores=True)
    assert index == [(r.id, r.created_at) for r in submitted]
    assert [r.id for r in list_runs(fake_conns.text, "acme").runs] == [r.id for r in reversed(submitted)]


def test_submitting_trims_what_is_older_than_the_horizon(fake_conns: Connections) -> None:
    bench = Bench.build(fake_conns)
    horizon = index_horizon(bench.settings.run_ttl_seconds)
    assert horizon == 2 * bench.settings.run_ttl_seconds
    now = time.time()
    fake_conns.text.zadd(keys.tenant_runs("acme"), {"ancient": now - horizon - 60, "recent": now - horizon + 60})
    run = bench.submit(tenant="acme")
    assert fake_conns.text.zrange(keys.tenant_runs("acme"), 0, -1) == ["recent", run.id]
