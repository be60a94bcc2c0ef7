from __future__ import annotations

from pathlib import Path

import pytest

from dispatcher.errors import ConfigError
from dispatcher.settings import load_settings


def test_defaults_without_environment() -> None:
    settings = load_settings({})
    assert settings.redis_url.startswith("redis://")
    assert settings.comfyui_urls == ["http://127.0.0.1:8188"]
    assert (settings.workflows_dir / "invert").is_dir()


def test_environment_and_overrides() -> None:
    env = {
        "COMFY_DISPATCH_REDIS_URL": "redis://example:6380/2",
        "COMFY_DISPATCH_COMFYUI_URLS": "http://a:8188, http://b:8188/",
        "COMFY_DISPATCH_OUTPUT_DIR": "/tmp/out",
        "UNRELATED": "x",
    }
    settings = load_settings(env, output_dir=Path("/srv/out"), comfyui_url=None)
    assert settings.redis_url == "redis://example:6380/2"
    assert settings.comfyui_urls == ["http://a:8188", "http://b:8188"]
    assert settings.output_dir == Path("/srv/out")


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("COMFY_DISPATCH_REDIS_URL", "http://nope"),
        ("COMFY_DISPATCH_COMFYUI_URL", "localhost:8188"),
        ("COMFY_DISPATCH_MAX_BODY_BYTES", "ten"),
        ("COMFY_DISPATCH_LEASE_SECONDS", "0"),
        ("COMFY_DISPATCH_LOG_LEVEL", "LOUD"),
    ],
)
def test_a_bad_setting_is_named(key: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({key: value})
    assert info.value.setting == key
    assert str(info.value).startswith(key)
