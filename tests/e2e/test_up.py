"""`comfy-dispatch up` on a machine with no Redis running and no ComfyUI: it starts both and the demo succeeds;
Ctrl-C stops Redis last, and `up` starts again at once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from subprocess import Popen

import pytest
from redis import Redis

from dispatcher.redis_server import RedisServer, find_redis_binary, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


def test_up_starts_everything_runs_the_demo_and_stops_cleanly(tmp_path: Path) -> None:
    redis_port, comfy_port, api_port = free_port(), free_port(), free_port()
    env = dict(
        os.environ,
        COMFY_DISPATCH_REDIS_URL=f"redis://127.0.0.1:{redis_port}/0",
        COMFY_DISPATCH_COMFYUI_URLS=f"http://127.0.0.1:{comfy_port}",
        COMFY_DISPATCH_OUTPUT_DIR=str(tmp_path / "outputs"),
    )
    result = subprocess.run(
        [sys.executable, "-m", "dispatcher", "up", "--api-port", str(api_port), "--exit-after-demo"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=170,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "FAKE ComfyUI" in output
    assert "started redis-server" in output
    assert "API key (shown once) cdk_" in output
    assert output.count("succeeded") >= 4, output
    pngs = list((tmp_path / "outputs").rglob("*.png"))
    assert len(pngs) >= 4
    # every process it started is gone again
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert f"--port {api_port}" not in ps and f"--port {comfy_port}" not in ps and f"--port {redis_port}" not in ps


def _env(tmp_path: Path) -> tuple[dict[str, str], list[int]]:
    redis_port, comfy_port, api_port = free_port(), free_port(), free_port()
    env = dict(
        os.environ,
        COMFY_DISPATCH_REDIS_URL=f"redis://127.0.0.1:{redis_port}/0",
        COMFY_DISPATCH_COMFYUI_URLS=f"http://127.0.0.1:{comfy_port}",
        COMFY_DISPATCH_OUTPUT_DIR=str(tmp_path / "outputs"),
    )
    return env, [redis_port, comfy_port, api_port]


def _start_up(tmp_path: Path, env: dict[str, str], api_port: int, log_path: Path, *, until: str) -> Popen[bytes]:
    """`up` in a process group of its own, as a shell runs a foreground job; back once its log shows ``until``."""
    with log_path.open("wb") as out:
        up = subprocess.Popen(
            [sys.executable, "-m", "dispatcher", "up", "--api-port", str(api_port), "--no-demo"],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + 60
    while until not in log_path.read_text():
        if up.poll() is not None or time.monotonic() > deadline:
            os.killpg(up.pid, signal.SIGINT)
            up.wait(30)
            raise AssertionError(f"`up` never logged {until!r}:\n{log_path.read_text()}")
        time.sleep(0.02)  # start-up probe only
    return up


def _none_left(ports: list[int]) -> None:
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert not [port for port in ports if f"--port {port}" in ps], ps


def test_up_stopped_by_ctrl_c_stops_redis_last_and_starts_again_at_once(tmp_path: Path) -> None:
    """Ctrl-C reaches the terminal's whole foreground process group. Redis must not get it: stopped first, it
    would leave the workers unable to record their death in RQ, and the next `up` would find "worker-0" still
    registered. Here `up` is interrupted that way, then started again at once in the same folder (same AOF)."""
    env, ports = _env(tmp_path)
    redis_log = tmp_path / ".state" / "redis" / "redis.log"
    for life in (1, 2):
        up = _start_up(tmp_path, env, ports[2], tmp_path / f"up-{life}.log", until="serving: API")
        os.killpg(up.pid, signal.SIGINT)  # what the terminal does on Ctrl-C
        assert up.wait(60) == 0, (tmp_path / f"up-{life}.log").read_text()
        assert "Received SIGINT" not in redis_log.read_text(), "redis-server got the terminal's Ctrl-C"
        assert redis_log.read_text().count("Received SIGTERM") == life  # stopped by `up`, after the others
    worker_log = (tmp_path / ".state" / "logs" / "worker-0.log").read_text()
    assert "earlier life" not in worker_log, worker_log  # the first life recorded its death: nothing to clear
    # What the last life left in the AOF: every RQ worker recorded its death, so Redis outlived them all.
    server = RedisServer(data_dir=redis_log.parent).start(find_redis_binary())
    try:
        client = Redis(port=server.port, decode_responses=True)
        records = {name: client.hgetall(name) for name in client.scan_iter("rq:worker:*")}
        client.close()
    finally:
        server.stop()
    assert "rq:worker:worker-0" in records and all("death" in record for record in records.values()), records
    _none_left(ports)


def test_up_interrupted_while_starting_stops_at_once(tmp_path: Path) -> None:
    """Ctrl-C before the stack serves (starting, or in the demo) stops what was started, not after start-up."""
    env, ports = _env(tmp_path)
    log_path = tmp_path / "up.log"
    up = _start_up(tmp_path, env, ports[2], log_path, until="started redis-server")
    os.killpg(up.pid, signal.SIGINT)
    assert up.wait(30) == 130, log_path.read_text()
    assert "interrupted before serving" in log_path.read_text()
    redis_log = (tmp_path / ".state" / "redis" / "redis.log").read_text()
    assert "Received SIGTERM" in redis_log and "Received SIGINT" not in redis_log
    _none_left(ports)
