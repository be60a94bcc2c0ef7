"""A whole stack of real processes for end-to-end tests and benchmarks: fakes, API, workers."""

from __future__ import annotations

import io
from pathlib import Path
from types import TracebackType

import requests
from PIL import Image

from dispatcher.redis_server import free_port
from tests.support import FakeComfy, Proc, wait_http

STARTUP_SECONDS = 45.0


class LocalStack:
    """N fake ComfyUIs, N workers (one per fake) and one API, all child processes.

    With ``comfyui_urls``, the workers drive those ComfyUIs (a real one, say) and no fake is started.
    ``fake_models`` gives each fake its model files (folder -> files, as ``FakeComfy(models=...)``), one entry
    per fake in order; ``model_load_seconds`` makes each fake's first prompt after a checkpoint change slower.
    ``local_outputs``: each worker reads its fake's outputs from the fake's output folder
    (``--comfyui-output-dir``, as a worker on ComfyUI's host would), not over ``/view``.
    """

    def __init__(
        self,
        redis_url: str,
        tmp: Path,
        *,
        workers: int = 2,
        exec_seconds: float = 0.0,
        env: dict[str, str] | None = None,
        start_workers: bool = True,
        comfyui_urls: list[str] | None = None,
        fake_models: list[dict[str, list[str]]] | None = None,
        model_load_seconds: float = 0.0,
        local_outputs: bool = False,
    ) -> None:
        self.redis_url = redis_url
        self.tmp = tmp
        self.api_port = free_port()
        self.api = f"http://127.0.0.1:{self.api_port}"
        self.env = {
            "COMFY_DISPATCH_REDIS_URL": redis_url,
            "COMFY_DISPATCH_OUTPUT_DIR": str(tmp / "outputs"),
            "COMFY_DISPATCH_LOG_LEVEL": "WARNING",
            "COMFY_DISPATCH_LEASE_SECONDS": "6",
            "COMFY_DISPATCH_AUTH": "disabled",  # the API listens on loopback only
            "COMFY_DISPATCH_SUBMIT_RATE": "100000",
            "COMFY_DISPATCH_SUBMIT_BURST": "100000",
            **(env or {}),
        }
        if fake_models is not None and len(fake_models) != workers:
            raise ValueError(f"fake_models has {len(fake_models)} entries for {workers} fakes")
        self.fakes = (
            []
            if comfyui_urls
            else [
                FakeComfy(
                    tmp / f"fake-{i}",
                    exec_seconds,
                    models=fake_models[i] if fake_models else None,
                    model_load_seconds=model_load_seconds,
                )
                for i in range(workers)
            ]
        )
        self.comfyui_urls = comfyui_urls or [fake.url for fake in self.fakes]
        workers = len(self.comfyui_urls)
        # Each process but the API (which serves /metrics itself) serves its metrics on a port of its own.
        self.scheduler_metrics_port = free_port()
        self.webhooks_metrics_port = free_port()
        self.worker_metrics_ports = [free_port() for _ in range(workers)]
        self.workers: list[Proc] = []
        self.api_proc: Proc | None = None
        self.scheduler: Proc | None = None
        self.webhooks: Proc | None = None
        self.start_workers = start_workers
        self.local_outputs = local_outputs

    def start(self) -> LocalStack:
        try:
            for fake in self.fakes:
                fake.start()
            self.api_proc = Proc(["api", "--port", str(self.api_port)], self.tmp / "api.log", self.env).start()
            scheduler = self._metered("scheduler", self.scheduler_metrics_port)
            self.scheduler = Proc(scheduler, self.tmp / "scheduler.log", self.env).start()
            webhooks = self._metered("webhooks", self.webhooks_metrics_port)
            self.webhooks = Proc(webhooks, self.tmp / "webhooks.log", self.env).start()
            if self.start_workers:
                self.start_all_workers()
            # A loaded CI machine starting two stacks at once (two test processes) can take a while.
            wait_http(self.api + "/readyz", timeout=STARTUP_SECONDS)
            # A process that could not start fails the test here, not as a missing count minutes later.
            for port in (self.scheduler_metrics_port, self.webhooks_metrics_port):
                wait_http(f"http://127.0.0.1:{port}/metrics", timeout=STARTUP_SECONDS)
        except BaseException as exc:
            # __exit__ does not run when __enter__ fails: stop what started, or its workers outlive the test and,
            # once its Redis port is another test's, take that test's runs.
            try:
                logs = self.logs()
            except OSError:
                logs = ""
            self.stop()
            raise RuntimeError(f"the stack did not start: {exc!r}\n{logs}") from exc
        return self

    def start_all_workers(self) -> None:
        for i in range(len(self.comfyui_urls)):
            self.workers.append(self.start_worker(i))

    def worker_name(self, index: int) -> str:
        return f"w{index}-{self.comfyui_urls[index].rsplit(':', 1)[-1]}"

    def start_worker(self, index: int, name: str | None = None) -> Proc:
        """Start the worker of ComfyUI ``index`` (under its usual name unless ``name``)."""
        url = self.comfyui_urls[index]
        args = ["worker", "--comfyui-url", url, "--name", name or self.worker_name(index)]
        if index < len(self.worker_metrics_ports):
            args += ["--metrics-port", str(self.worker_metrics_ports[index]), "--metrics-host", "127.0.0.1"]
        if self.local_outputs and index < len(self.fakes):
            args += ["--comfyui-output-dir", str(self.fakes[index].data_dir / "output")]
        return Proc(args, self.tmp / f"worker-{index}.log", self.env).start()

    @staticmethod
    def _metered(command: str, port: int) -> list[str]:
        return [command, "--metrics-port", str(port), "--metrics-host", "127.0.0.1"]

    def stop(self) -> None:
        others = [p for p in (self.api_proc, self.scheduler, self.webhooks) if p is not None]
        for proc in [*self.workers, *others, *self.fakes]:
            proc.stop()

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def procs(self) -> list[Proc]:
        """Every process of the stack (the fakes included)."""
        others = (self.api_proc, self.scheduler, self.webhooks)
        return [*self.workers, *self.fakes, *(p for p in others if p is not None)]

    def logs(self) -> str:
        return "\n".join(f"--- {p.log_path.name}\n{p.log()[-3000:]}" for p in self.procs())


def first_pixel(data: bytes) -> tuple[int, ...]:
    image = Image.open(io.BytesIO(data)).convert("RGB")
    return tuple(image.getpixel((0, 0)))  # type: ignore[arg-type]


def submit(session: requests.Session, api: str, workflow: str, body: dict[str, object]) -> str:
    reply = session.post(f"{api}/v1/workflows/{workflow}/runs", json=body, timeout=10)
    assert reply.status_code == 202, reply.text
    run_id: str = reply.json()["id"]
    return run_id
