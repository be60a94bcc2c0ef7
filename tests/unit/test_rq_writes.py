"""dispatcher.scheduling.rq_writes: a run's RQ job writes, made from a stand-in's, are RQ's own (timestamps aside);
when they would not be, RQ's own enqueue makes them."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import pytest

from dispatcher.connections import Connections
from dispatcher.scheduling import rq_writes
from dispatcher.scheduling.dispatch import Dispatched
from dispatcher.scheduling.handout import JOB_FUNC, Handout, describe, job_id
from dispatcher.scheduling.rq_writes import STAND_INS, JobWrites, Writes
from dispatcher.settings import load_settings

STAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")


def without_times(writes: Writes) -> Writes:
    return [[None if isinstance(arg, str) and STAMP.fullmatch(arg) else arg for arg in command] for command in writes]


@pytest.fixture
def handout(fake_conns: Connections) -> Handout:
    return Handout(load_settings({}), fake_conns)


@pytest.mark.parametrize(
    ("run_id", "dispatch", "timeout"),
    [("0123456789abcdef0123456789abcdef", 1, None), ("fedcba9876543210fedcba9876543210", 7, 3600.0)],
)
def test_a_runs_writes_are_rqs_own(
    handout: Handout, monkeypatch: pytest.MonkeyPatch, run_id: str, dispatch: int, timeout: float | None
) -> None:
    run = Dispatched(run_id, dispatch, "normal", timeout)
    made = handout.enqueue_writes(run)
    assert handout.job_writes._recipes[handout._timeout(run)] is not None  # made from the template, not by RQ
    own = handout._rq_writes(run_id, dispatch, handout._timeout(run))
    assert without_times(made) == without_times(own)
    moment = datetime(2026, 12, 2, 3, 4, 5, 678901, tzinfo=UTC)
    monkeypatch.setattr(rq_writes, "now", lambda: moment)
    stamps = [
        arg
        for command in handout.enqueue_writes(run)
        for arg in command
        if isinstance(arg, str) and STAMP.fullmatch(arg)
    ]
    assert stamps == ["2026-12-02T03:04:05.678901Z"] * 2  # the job's created_at and enqueued_at: the moment it is made


def test_rq_builds_a_job_only_for_the_stand_ins_once_per_time_limit(handout: Handout) -> None:
    built: list[tuple[str, int, int]] = []
    enqueue = handout.job_writes.enqueue

    def counted(run_id: str, dispatch: int, timeout: int) -> Writes:
        built.append((run_id, dispatch, timeout))
        return enqueue(run_id, dispatch, timeout)

    handout.job_writes.enqueue = counted
    for i in range(5):
        for seconds in (60.0, 600.0):
            handout.enqueue_writes(Dispatched(f"{i:032x}", 1, "high", seconds))
    stand_ins = [(run_id, dispatch) for run_id, dispatch in STAND_INS]
    assert built == [(*stand_in, timeout) for timeout in (180, 720) for stand_in in stand_ins]


def test_writes_the_template_cannot_make_are_left_to_rq(handout: Handout, caplog: pytest.LogCaptureFixture) -> None:
    """Say a later RQ put something of its own in each job (here a counter): every run's writes are RQ's then."""
    calls = iter(range(1000))

    def changing(run_id: str, dispatch: int, timeout: int) -> Writes:
        writes: list[list[Any]] = handout._rq_writes(run_id, dispatch, timeout)
        writes[1] = [*writes[1], "serial", str(next(calls))]
        return writes

    writes = JobWrites(handout.queue, JOB_FUNC, describe, job_id, changing)
    first = writes("0123456789abcdef0123456789abcdef", 1, 180)
    second = writes("0123456789abcdef0123456789abcdef", 1, 180)
    assert first[1][-1] != second[1][-1]  # each made by RQ
    assert "RQ's own enqueue" in caplog.text


def test_past_a_few_time_limits_rq_writes_the_jobs(handout: Handout, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run may set its own time limit: each one learnt costs two of RQ's enqueues and a template kept."""
    monkeypatch.setattr(rq_writes, "MAX_TEMPLATES", 2)
    for seconds in (60.0, 120.0, 180.0, 240.0):
        run = Dispatched("0123456789abcdef0123456789abcdef", 1, "normal", seconds)
        own = handout._rq_writes(run.run_id, 1, handout._timeout(run))
        assert without_times(handout.enqueue_writes(run)) == without_times(own)
    assert sorted(handout.job_writes._recipes) == [180, 240]


def test_a_template_that_cannot_be_learnt_leaves_the_writes_to_rq(
    handout: Handout, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[str] = []

    def failing_once(run_id: str, dispatch: int, timeout: int) -> Writes:
        calls.append(run_id)
        if len(calls) == 1:
            raise RuntimeError("an RQ that changed")
        return handout._rq_writes(run_id, dispatch, timeout)

    writes = JobWrites(handout.queue, JOB_FUNC, describe, job_id, failing_once)
    made = writes("0123456789abcdef0123456789abcdef", 1, 180)
    assert without_times(made) == without_times(handout._rq_writes("0123456789abcdef0123456789abcdef", 1, 180))
    assert "could not be learnt" in caplog.text and calls[-1] == "0123456789abcdef0123456789abcdef"
