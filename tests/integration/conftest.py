"""A worker's context (connections, ComfyUI client, store) against the real redis-server and a fake ComfyUI."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from dispatcher.settings import load_settings
from tests.support import FakeComfy
from worker.context import WorkerContext

ContextFactory = Callable[..., WorkerContext]


@pytest.fixture
def worker_context(redis_url: str, fake_comfyui: FakeComfy, tmp_path: Path) -> Iterator[ContextFactory]:
    """Builds a healthy worker context; keyword arguments (and ``env``) override settings."""
    built: list[WorkerContext] = []

    def build(env: dict[str, str] | None = None, **overrides: Any) -> WorkerContext:
        defaults: dict[str, Any] = {
            "redis_url": redis_url,
            "comfyui_url": fake_comfyui.url,
            "output_dir": tmp_path / "out",
            "lease_seconds": 3,
            "retry_base": 0.001,
            "retry_cap": 0.001,
        }
        context = WorkerContext.build(load_settings(env or {}, **(defaults | overrides)), "test-worker")
        context.state.healthy.set()
        built.append(context)
        return context

    yield build
    for context in built:
        context.close()
