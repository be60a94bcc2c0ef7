"""Settings choose the output store: local by default, S3 with a bucket; a bad choice names the setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from dispatcher.errors import ConfigError
from dispatcher.settings import load_settings
from dispatcher.storage import LocalStore, make_store
from dispatcher.storage_s3 import S3Store

S3_ENV = {
    "COMFY_DISPATCH_STORAGE": "S3",
    "COMFY_DISPATCH_S3_BUCKET": "outputs",
    "COMFY_DISPATCH_S3_PREFIX": "prod/",
    "COMFY_DISPATCH_S3_ENDPOINT_URL": "http://minio.internal:9000/",
    "COMFY_DISPATCH_S3_REGION": "eu-west-1",
    "COMFY_DISPATCH_S3_PATH_STYLE": "true",
    "COMFY_DISPATCH_S3_CHECKSUMS": "when_required",
    "COMFY_DISPATCH_S3_PRESIGN_SECONDS": "120",
}


def test_local_is_the_default(tmp_path: Path) -> None:
    settings = load_settings({"COMFY_DISPATCH_OUTPUT_DIR": str(tmp_path)})
    assert settings.storage == "local"
    store = make_store(settings)
    assert isinstance(store, LocalStore) and store.root == tmp_path.resolve()


def test_s3_settings_build_an_s3_store(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")  # the standard chain: presigning needs some credentials
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    settings = load_settings(S3_ENV)
    assert settings.storage == "s3" and settings.s3_path_style is True
    store = make_store(settings)
    assert isinstance(store, S3Store)
    assert store.bucket == "outputs" and store.prefix == "prod/" and store.presign_seconds == 120
    config = store.client.meta.config
    assert config.s3 == {"addressing_style": "path"}
    assert config.request_checksum_calculation == config.response_checksum_validation == "when_required"
    assert store.client.meta.region_name == "eu-west-1"
    url = store.url("r/1/a.png")
    assert url is not None and url.startswith("http://minio.internal:9000/outputs/prod/r/1/a.png?")
    assert "X-Amz-Expires=120" in url


def test_a_public_url_replaces_presigning() -> None:
    store = make_store(load_settings(S3_ENV | {"COMFY_DISPATCH_S3_PUBLIC_URL": "https://files.example.com/"}))
    assert store.url("r/1/a.png") == "https://files.example.com/prod/r/1/a.png"


@pytest.mark.parametrize("bucket", [None, "", "  "])
def test_s3_without_a_bucket_names_the_variable(bucket: str | None) -> None:
    env = {"COMFY_DISPATCH_STORAGE": "s3"} | ({} if bucket is None else {"COMFY_DISPATCH_S3_BUCKET": bucket})
    with pytest.raises(ConfigError) as info:
        load_settings(env)
    assert info.value.setting == "COMFY_DISPATCH_S3_BUCKET"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("STORAGE", "gcs"),
        ("S3_CHECKSUMS", "never"),
        ("S3_ENDPOINT_URL", "minio:9000"),
        ("S3_PUBLIC_URL", "ftp://x"),
        ("S3_PRESIGN_SECONDS", "0"),
        ("S3_PRESIGN_SECONDS", str(8 * 86400)),
        ("S3_PATH_STYLE", "maybe"),
    ],
)
def test_bad_storage_settings_are_named(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(S3_ENV | {f"COMFY_DISPATCH_{name}": value})
    assert info.value.setting == f"COMFY_DISPATCH_{name}"
