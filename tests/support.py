"""Helpers for tests that run project processes: the fake ComfyUI, the API, workers."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import requests

from dispatcher.redis_server import free_port


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
    """``comfy-dispatch fake-comfyui`` as a child process.

    ``models`` (folder -> file names) become ``--models FOLDER=FILE,...`` flags, replacing those folders' default
    lists; ``model_load_seconds`` is what a switch of checkpoint (or diffusion model) costs a prompt.
    """

    def __init__(
        self,
        tmp: Path,
        exec_seconds: float = 0.0,
        port: int | None = None,
        models: dict[str, list[str]] | None = None,
        model_load_seconds: float = 0.0,
    ) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data_dir = tmp
        args = ["fake-comfyui", "--port", str(self.port), "--exec-seconds", str(exec_seconds), "--data-dir", str(tmp)]
        for folder, files in (models or {}).items():
            args += ["--models", f"{folder}={','.join(files)}"]
        if model_load_seconds:
            args += ["--model-load-seconds", str(model_load_seconds)]
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
