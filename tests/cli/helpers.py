"""What the CLI's real-process tests share: running ``comfy-dispatch`` as a child, counting runs, reading images."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from PIL import Image
from redis import Redis

from dispatcher import keys
from dispatcher.fake_comfyui.values import inverted_rgb8


def cli(args: list[str], api: str, *, timeout: float = 60, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``comfy-dispatch ARGS`` against the API at ``api``, to its end."""
    env = {**os.environ, "COMFY_DISPATCH_API_URL": api}
    env.pop("COMFY_DISPATCH_API_KEY", None)
    command = [sys.executable, "-m", "dispatcher", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout, cwd=cwd)


def start_cli(args: list[str], api: str, log: Path) -> subprocess.Popen[bytes]:
    """``comfy-dispatch ARGS`` started in the background, its output to ``log``."""
    env = {**os.environ, "COMFY_DISPATCH_API_URL": api}
    env.pop("COMFY_DISPATCH_API_KEY", None)
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "dispatcher", *args], env=env, stdout=out, stderr=out)


def run_records(redis_url: str) -> int:
    """How many run records Redis holds (``cd:run:<id>``, not the keys beside them)."""
    client = Redis.from_url(redis_url, decode_responses=True)
    try:
        prefix = keys.run("")
        return sum(1 for key in client.scan_iter(match=prefix + "*", count=1000) if ":" not in key[len(prefix) :])
    finally:
        client.close()


def pixels(path: Path) -> set[tuple[int, ...]]:
    """Every distinct colour of an image file."""
    with Image.open(io.BytesIO(path.read_bytes())) as image:
        colours = image.convert("RGB").getcolors(maxcolors=1 << 16) or []
    return {colour for _, colour in colours if isinstance(colour, tuple)}


def assert_inverted(path: Path, color: int) -> None:
    """``path`` is the invert workflow's image of ``color``: every pixel that colour, inverted."""
    assert pixels(path) == {inverted_rgb8(color)}, f"{path} is not the inversion of {color:#08x}"


def read_results(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def invert_line(color: int, **extra: Any) -> str:
    return json.dumps({"workflow": "invert", "params": {"width": 8, "height": 8, "color": color}, **extra})
