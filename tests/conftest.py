"""Shared fixtures: real redis-server and fake ComfyUI processes on free ports, fakeredis for unit tests."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import fakeredis
import pytest
import requests
from redis import Redis

from dispatcher.connections import Connections
from dispatcher.redis_server import RedisServer, find_redis_binary, free_port

ROOT = Path(__file__).resolve().parent.parent
TRANSCRIPTS = ROOT / "tests" / "fixtures" / "transcripts"


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(data_dir=tmp_path_factory.mktemp("redis"), appendonly=False).start(find_redis_binary())
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> Iterator[str]:
    """A real, empty Redis (flushed before and after the test)."""
    client = Redis.from_url(redis_server.url)
    client.flushall()
    yield redis_server.url
    client.flushall()
    client.close()


@pytest.fixture
def fake_conns() -> Iterator[Connections]:
    """fakeredis pair sharing one server: text (decoded) and raw (for RQ)."""
    server = fakeredis.FakeServer()
    conns = Connections(
        text=fakeredis.FakeRedis(server=server, decode_responses=True), raw=fakeredis.FakeRedis(server=server)
    )
    yield conns
    conns.close()


class Proc:
    """A child process of the project (``python -m dispatcher ...``), logged to a file."""

    def __init__(self, args: list[str], log_path: Path, env: dict[str, str] | None = None) -> None:
        self.args = args
        self.log_path = log_path
        self.env = dict(os.environ, **(env or {}))
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Proc:
        with self.log_path.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "dispatcher", *self.args], stdout=out, stderr=subprocess.STDOUT, env=self.env
            )
        return self

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def wait_http(url: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(url, timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.05)  # start-up probe only
    raise TimeoutError(url)


class FakeComfy(Proc):
    def __init__(self, tmp: Path, exec_seconds: float = 0.0) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data_dir = tmp
        args = ["fake-comfyui", "--port", str(self.port), "--exec-seconds", str(exec_seconds), "--data-dir", str(tmp)]
        super().__init__(args, tmp / "fake.log")

    def start(self) -> FakeComfy:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        super().start()
        wait_http(self.url + "/system_stats")
        return self

    def stats(self) -> dict[str, object]:
        result: dict[str, object] = requests.get(self.url + "/fake/stats", timeout=5).json()
        return result

    def control(self, **faults: object) -> None:
        requests.post(self.url + "/fake/control", json=faults, timeout=5).raise_for_status()

    def reset(self) -> None:
        requests.post(self.url + "/fake/reset", timeout=5).raise_for_status()


@pytest.fixture(scope="module")
def fake_comfyui_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeComfy]:
    fake = FakeComfy(tmp_path_factory.mktemp("fake-comfyui")).start()
    yield fake
    fake.stop()


@pytest.fixture
def fake_comfyui(fake_comfyui_module: FakeComfy) -> FakeComfy:
    """A running fake ComfyUI process, reset (no history, no faults) for each test."""
    fake_comfyui_module.reset()
    return fake_comfyui_module
