"""``comfy-dispatch up``: the whole stack on one machine, for a first look and for demos.

Starts (or reuses) Redis, one ComfyUI per ``COMFYUI_URLS`` entry (the fake one
where nothing answers), the API and one worker per ComfyUI, each a child
process with its log under ``.state/logs``; then runs the demo and serves
until Ctrl-C, which stops every process it started, Redis last.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import requests
from redis import Redis
from redis.exceptions import RedisError
from rich.console import Console

from dispatcher.apikeys import ApiKeyStore
from dispatcher.demo import run_demo
from dispatcher.errors import DispatchError
from dispatcher.fleet import read_workers
from dispatcher.redis_server import RedisServer, free_port
from dispatcher.settings import PREFIX, Settings
from dispatcher.tenants import TenantStore

log = logging.getLogger(__name__)

LOOPBACK = ("127.0.0.1", "localhost", "::1")
DEMO_TENANT = "demo"


class Child:
    def __init__(self, name: str, args: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        with self.log_path.open("ab") as out:
            # Own session: Ctrl-C reaches only `up`, which then stops children in order.
            self.process = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        if self.alive():
            self.process.terminate()

    def wait(self, timeout: float) -> None:
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop in %.0fs: killing it", self.name, timeout)
            self.process.kill()
            self.process.wait(5)


class Stack:
    def __init__(self, settings: Settings, *, api_port: int = 8000, state_dir: Path = Path(".state")) -> None:
        self.settings = settings
        self.api_port = api_port
        self.state_dir = state_dir.resolve()
        self.log_dir = self.state_dir / "logs"
        self.children: list[Child] = []
        self.redis: RedisServer | None = None
        self.redis_url = settings.redis_url
        self.metrics_urls: dict[str, str] = {}
        self.fake_outputs: dict[str, Path] = {}  # a fake ComfyUI started here: its output folder
        self.stopping = threading.Event()
        self.serving = False
        self.holding = False
        self.started_at = 0.0

    def _spawn(self, name: str, *args: str, env: dict[str, str]) -> Child:
        with self._held():
            child = Child(name, [sys.executable, "-m", "dispatcher", *args], env, self.log_dir)
            self.children.append(child)
        return child

    def _on_signal(self, *_: object) -> None:
        first = not self.stopping.is_set()
        self.stopping.set()
        if first and not self.serving and not self.holding:
            raise KeyboardInterrupt  # during start-up or the demo: stop now, not once they are over

    @contextmanager
    def _held(self) -> Iterator[None]:
        """Starting a process: a Ctrl-C meanwhile interrupts once ``stop()`` knows the process (not in between)."""
        self.holding = True
        try:
            yield
        finally:
            self.holding = False
        if self.stopping.is_set() and not self.serving:
            raise KeyboardInterrupt

    def run(self, *, demo: bool = True, exit_after_demo: bool = False) -> int:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)
        try:
            env = self._start()
            api_key = self._demo_key(env["COMFY_DISPATCH_REDIS_URL"])
            if demo and not run_demo(f"http://127.0.0.1:{self.api_port}", env, self.settings, api_key=api_key):
                return 1
            if exit_after_demo:
                return 0
            self.serving = True
            log.info("serving: API on http://127.0.0.1:%d (docs at /docs); Ctrl-C stops everything", self.api_port)
            while not self.stopping.wait(1.0):
                for child in self.children:
                    if not child.alive():
                        log.error("%s exited with %s; see %s", child.name, child.process.returncode, child.log_path)
                        return 1
            return 0
        except KeyboardInterrupt:
            log.warning("interrupted before serving: stopping")
            return 130
        finally:
            self.stop()

    def _start(self) -> dict[str, str]:
        self.started_at = time.time()
        redis_url = self.redis_url = self._ensure_redis()
        env = dict(os.environ, COMFY_DISPATCH_REDIS_URL=redis_url, COMFY_DISPATCH_LOG_LEVEL=self.settings.log_level)
        env["COMFY_DISPATCH_OUTPUT_DIR"] = str(self.settings.output_dir.resolve())
        env["COMFY_DISPATCH_WORKFLOWS_DIR"] = str(self.settings.workflows_dir.resolve())
        comfyuis = [self._ensure_comfyui(url, i, env) for i, url in enumerate(self.settings.comfyui_urls)]
        self._spawn("api", "api", "--host", "127.0.0.1", "--port", str(self.api_port), env=env)
        self._spawn("scheduler", "scheduler", *self._metrics("scheduler"), env=env)
        self._spawn("webhooks", "webhooks", *self._metrics("webhooks"), env=env)
        if len(comfyuis) > 1 and env.pop(PREFIX + "COMFYUI_OUTPUT_DIR", ""):
            # One folder is one ComfyUI's: given to every worker, each would look for its outputs in the same one.
            log.warning("%sCOMFYUI_OUTPUT_DIR ignored: it names one ComfyUI's folder, and up starts %d workers",
                        PREFIX, len(comfyuis))  # fmt: skip
        for i, url in enumerate(comfyuis):
            name = f"worker-{i}"
            # A fake started here is on this host: its worker reads outputs from its folder, not over /view.
            local = ("--comfyui-output-dir", str(self.fake_outputs[url])) if url in self.fake_outputs else ()
            args = ("--comfyui-url", url, "--name", name, *local, *self._metrics(name))
            self._spawn(name, "worker", *args, env=env)
        self._wait_ready(len(comfyuis))
        return env

    def _metrics(self, name: str) -> tuple[str, ...]:
        """Flags giving a process its own metrics endpoint on a free loopback port (the API serves /metrics)."""
        port = free_port()
        self.metrics_urls[name] = f"http://127.0.0.1:{port}/metrics"
        return ("--metrics-port", str(port), "--metrics-host", "127.0.0.1")

    def _demo_key(self, redis_url: str) -> str:
        """A tenant "demo" and a fresh key for it (all scopes), printed for the person at the terminal."""
        with Redis.from_url(redis_url, decode_responses=True) as client:
            TenantStore(client, self.settings).set(DEMO_TENANT)
            info, key = ApiKeyStore(client).create(DEMO_TENANT, ("submit", "read", "admin"))
        Console(stderr=True).print(
            f"demo tenant [bold]{DEMO_TENANT}[/]: API key (shown once) [bold green]{key}[/]\n"
            f"  curl -H 'X-API-KEY: {key}' http://127.0.0.1:{self.api_port}/v1/workflows",
            soft_wrap=True,
            highlight=False,
        )
        return key

    def _ensure_redis(self) -> str:
        url = self.settings.redis_url
        try:
            with Redis.from_url(url, socket_connect_timeout=1) as client:
                client.ping()
            log.info("using the Redis at %s", url)
            return url
        except RedisError:
            pass
        parts = urlsplit(url)
        port = (parts.port or 6379) if parts.hostname in LOOPBACK else free_port()
        self.redis = RedisServer(port, data_dir=self.state_dir / "redis", appendfsync=self.settings.redis_appendfsync)
        with self._held():
            self.redis.start()
        log.info("started redis-server on port %d (AOF in %s)", port, self.redis.data_dir)
        return self.redis.url

    def _ensure_comfyui(self, url: str, index: int, env: dict[str, str]) -> str:
        if _answers(url + "/system_stats"):
            log.info("using the ComfyUI at %s", url)
            return url
        parts = urlsplit(url)
        port = parts.port if parts.hostname in LOOPBACK and parts.port else free_port()
        fake_url = f"http://127.0.0.1:{port}"
        log.warning("no ComfyUI answers at %s: starting the project's FAKE ComfyUI on %s instead", url, fake_url)
        data_dir = self.state_dir / f"fake-comfyui-{index}"
        self._spawn(f"fake-comfyui-{index}", "fake-comfyui", "--port", str(port), "--data-dir", str(data_dir), env=env)
        _wait_until(lambda: _answers(fake_url + "/system_stats"), 20, f"the fake ComfyUI on {fake_url}")
        self.fake_outputs[fake_url] = data_dir.resolve() / "output"
        return fake_url

    def _wait_ready(self, workers: int) -> None:
        api = f"http://127.0.0.1:{self.api_port}"
        _wait_until(lambda: _answers(api + "/readyz"), 30, f"the API on {api}", self.children)

        def workers_healthy() -> bool:
            # Beats from before this start are an earlier life's (killed, its entry not yet expired): not ours.
            since = self.started_at
            with Redis.from_url(self.redis_url, decode_responses=True) as client:
                return sum(1 for w in read_workers(client, since=since) if w.ready) >= workers

        _wait_until(workers_healthy, 30, f"{workers} healthy worker(s)", self.children)
        log.info("stack is up: API %s, %d worker(s); logs in %s", api, workers, self.log_dir)
        scrape = ", ".join(f"{name} {url}" for name, url in self.metrics_urls.items())
        log.info("Prometheus metrics: api %s/metrics, %s", api, scrape)

    def stop(self) -> None:
        """Stop the children, then Redis: they record their stop in it (RQ's worker registry among others)."""
        for child in reversed(self.children):
            child.stop()
        for child in reversed(self.children):
            child.wait(15)
        if self.redis is not None:
            self.redis.stop()
        if self.children or self.redis:
            log.info("stopped every process `up` started")
        self.children.clear()
        self.redis = None


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=1).status_code == 200
    except requests.RequestException:
        return False


def _wait_until(check: object, timeout: float, what: str, children: list[Child] | None = None) -> None:
    assert callable(check)
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except (requests.RequestException, ValueError):
            pass
        for child in children or []:
            if not child.alive():
                raise DispatchError(f"{child.name} exited while waiting for {what}; see {child.log_path}")
        if time.monotonic() > deadline:
            raise DispatchError(f"gave up waiting for {what} after {timeout:.0f}s")
        time.sleep(0.1)  # start-up probing only
