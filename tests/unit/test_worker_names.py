"""Telling a dead earlier life of a worker from a live namesake by the identity RQ's record carries."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from dispatcher.settings import load_settings
from worker.names import Liveness, liveness, process_identity, quiet_seconds, start_time

HERE = "boot-a/pid:[4026531836]/100/5000"


def _started(pid: int) -> str | None:
    """A machine where pid 200 runs since tick 7000, pid 300 is hidden, and nothing else runs."""
    if pid == 300:
        raise PermissionError("hidden by hidepid")
    return {200: "7000"}.get(pid)


@pytest.mark.parametrize(
    ("recorded", "expected"),
    [
        ("boot-a/pid:[4026531836]/200/7000", Liveness.ALIVE),  # that very process still runs
        ("boot-a/pid:[4026531836]/200/6000", Liveness.DEAD),  # its pid was reused by a later process
        ("boot-a/pid:[4026531836]/250/6000", Liveness.DEAD),  # no process has its pid
        ("boot-a/pid:[4026531836]/300/6000", Liveness.UNKNOWN),  # /proc cannot tell
        ("boot-b/pid:[4026531836]/200/7000", Liveness.UNKNOWN),  # another machine (or a reboot)
        ("boot-a/pid:[4026532000]/200/7000", Liveness.UNKNOWN),  # another PID namespace (a container)
        ("boot-a/pid:[4026531836]/-1/7000", Liveness.UNKNOWN),  # -1 and 0 name process groups, not processes
        ("boot-a/pid:[4026531836]/0/7000", Liveness.UNKNOWN),
        ("garbage", Liveness.UNKNOWN),
        (None, Liveness.UNKNOWN),  # a record written without the identity (an older version)
    ],
)
def test_liveness(recorded: str | None, expected: Liveness) -> None:
    assert liveness(recorded, HERE, _started) is expected


def test_liveness_without_an_identity_here_cannot_tell() -> None:
    assert liveness("boot-a/pid:[4026531836]/200/7000", None, _started) is Liveness.UNKNOWN


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_start_time_of_real_processes() -> None:
    identity = process_identity()
    assert identity is not None
    assert liveness(identity, identity) is Liveness.ALIVE  # this process
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert start_time(child.pid) is not None
        child.kill()  # not reaped yet: a zombie, dead all the same
        _wait_for_state(child.pid, "Z")
        assert start_time(child.pid) is None
    finally:
        child.kill()
        child.wait()
    assert start_time(child.pid) is None  # reaped: no such process


def _wait_for_state(pid: int, state: str) -> None:
    deadline = time.monotonic() + 5
    while Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != state:
        if time.monotonic() > deadline:
            raise TimeoutError(f"process {pid} never reached state {state}")
        time.sleep(0.01)  # the kernel's bookkeeping after SIGKILL: nothing to wait on


def test_a_namesake_elsewhere_is_watched_longer_than_a_live_worker_goes_without_a_beat() -> None:
    # A beat every 2 s, its ComfyUI probe timing out on connect (10 s) and read (10 s), a second of slack.
    assert quiet_seconds(load_settings({})) == 2 + 10 + 10 + 1
    assert quiet_seconds(load_settings({}, worker_heartbeat=0.5, comfyui_timeout=2)) == 5.5
