"""`comfy-dispatch up` on a machine with no Redis running and no ComfyUI: it starts both and the demo succeeds."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from dispatcher.redis_server import free_port

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
