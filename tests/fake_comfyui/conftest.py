"""Fixtures for the fake ComfyUI contract tests: an in-process fake on a free port, and a client for it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_comfy_helpers import Comfy

from dispatcher.fake_comfyui import BackgroundFake, FakeConfig


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[BackgroundFake]:
    with BackgroundFake(FakeConfig(port=0, output_dir=str(tmp_path / "comfy"))) as running:
        yield running


@pytest.fixture
def comfy(fake: BackgroundFake) -> Iterator[Comfy]:
    client = Comfy(fake)
    yield client
    client.close()
