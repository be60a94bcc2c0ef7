"""S3Store against a real S3 HTTP endpoint (moto's server mode): the local store's contract, and S3's own parts."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from dispatcher.errors import OutputNotFound, StorageError
from dispatcher.storage_s3 import MIN_PART_BYTES, S3Store
from tests.moto_s3 import MotoS3

pytestmark = pytest.mark.timeout(60)
MiB = 1024 * 1024


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoS3]:
    with MotoS3(tmp_path_factory.mktemp("moto") / "moto.log") as server:
        yield server


@pytest.fixture
def bucket(moto: MotoS3) -> str:
    return moto.bucket()


@pytest.fixture
def store(moto: MotoS3, bucket: str) -> S3Store:
    return moto.store(bucket, prefix="outputs")


def test_put_then_open(store: S3Store, moto: MotoS3, bucket: str) -> None:
    assert store.put("run1/1/a.png", [b"ab", b"", b"cd"], "image/png") == 4
    with store.open("run1/1/a.png") as fh:
        assert fh.read() == b"abcd"
    head = moto.client().head_object(Bucket=bucket, Key="outputs/run1/1/a.png")
    assert head["ContentType"] == "image/png" and head["ContentLength"] == 4


def test_an_empty_file_is_stored(store: S3Store) -> None:
    assert store.put("run1/1/empty.txt", [], "text/plain") == 0
    with store.open("run1/1/empty.txt") as fh:
        assert fh.read() == b""


def test_missing_output(store: S3Store) -> None:
    with pytest.raises(OutputNotFound):
        store.open("run1/1/none.png")
    with pytest.raises(OutputNotFound):
        store.open("run/../x")


@pytest.mark.parametrize("key", ["", "/etc/passwd", "run/../../x", "run//x", "./x"])
def test_keys_cannot_escape(store: S3Store, key: str) -> None:
    with pytest.raises(StorageError):
        store.put(key, [b"x"], "text/plain")


def test_a_large_file_goes_up_in_parts(moto: MotoS3, bucket: str) -> None:
    store = moto.store(bucket, part_bytes=MIN_PART_BYTES)
    block = os.urandom(MiB)

    def chunks() -> Iterator[bytes]:
        for _ in range(12):
            yield from (block[i : i + 256 * 1024] for i in range(0, MiB, 256 * 1024))

    assert store.put("big/1/big.bin", chunks(), "application/octet-stream") == 12 * MiB
    head = moto.client().head_object(Bucket=bucket, Key="big/1/big.bin")
    assert head["ETag"].strip('"').endswith("-3")  # 5 + 5 + 2 MiB: a multipart upload of three parts
    assert head["ContentLength"] == 12 * MiB
    with store.open("big/1/big.bin") as fh:
        data = fh.read()
    assert data == block * 12


def test_a_broken_source_leaves_no_object(moto: MotoS3, bucket: str) -> None:
    store = moto.store(bucket, part_bytes=MIN_PART_BYTES)

    def failing() -> Iterator[bytes]:
        yield os.urandom(6 * MiB)  # one whole part sent before the source breaks
        raise requests.ConnectionError("connection reset")

    with pytest.raises(requests.ConnectionError):
        store.put("r/1/a.bin", failing(), "application/octet-stream")
    client = moto.client()
    assert client.list_objects_v2(Bucket=bucket).get("KeyCount") == 0
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []  # aborted, not left to bill


def test_presigned_url_serves_the_bytes(store: S3Store, moto: MotoS3, bucket: str) -> None:
    store.presign_seconds = 600
    store.put("run1/1/a.png", [b"\x89PNG data"], "image/png")
    url = store.url("run1/1/a.png")
    assert url is not None
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}" == moto.url and parts.path == f"/{bucket}/outputs/run1/1/a.png"
    query = parse_qs(parts.query)
    assert query["X-Amz-Expires"] == ["600"] and "X-Amz-Signature" in query
    reply = requests.get(url, timeout=10)
    assert reply.status_code == 200 and reply.content == b"\x89PNG data"
    assert reply.headers["Content-Type"] == "image/png"


def test_public_url_mode(moto: MotoS3, bucket: str) -> None:
    store = moto.store(bucket, prefix="/team/outputs/", public_url="https://cdn.example.com/files/")
    assert store.url("run 1/1/a b.png") == "https://cdn.example.com/files/team/outputs/run%201/1/a%20b.png"


def test_path_style_on_a_custom_endpoint(moto: MotoS3, bucket: str) -> None:
    store = moto.store(bucket, path_style=True)
    store.put("k/1/x.txt", [b"x"], "text/plain")
    url = store.url("k/1/x.txt")
    assert url is not None and url.startswith(f"{moto.url}/{bucket}/k/1/x.txt?")


@pytest.mark.parametrize("checksums", ["when_supported", "when_required"])
def test_checksum_options_are_accepted(moto: MotoS3, bucket: str, checksums: str) -> None:
    store = moto.store(bucket, checksums=checksums, part_bytes=MIN_PART_BYTES)
    assert store.client.meta.config.request_checksum_calculation == checksums
    assert store.client.meta.config.response_checksum_validation == checksums
    data = os.urandom(MIN_PART_BYTES + 1)
    store.put(f"c/1/{checksums}.bin", [data], "application/octet-stream")
    with store.open(f"c/1/{checksums}.bin") as fh:
        assert fh.read() == data


def test_an_unreachable_endpoint_is_a_storage_error(tmp_path: Path) -> None:
    store = S3Store(
        "nowhere",
        endpoint_url="http://127.0.0.1:9",  # discard port: nothing listens
        region="us-east-1",
        path_style=True,
        max_attempts=1,
        connect_timeout=1,
        access_key_id="testing",
        secret_access_key="testing",
    )
    with pytest.raises(StorageError):
        store.put("r/1/a.png", [b"x"], "image/png")
    with pytest.raises(StorageError):
        store.open("r/1/a.png")


def test_a_missing_bucket_is_a_storage_error(moto: MotoS3) -> None:
    store = moto.store("no-such-bucket", max_attempts=1)
    with pytest.raises(StorageError):
        store.put("r/1/a.png", [b"x"], "image/png")
