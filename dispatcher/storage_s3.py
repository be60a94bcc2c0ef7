"""Run outputs in an S3 bucket (AWS, or an S3-compatible server such as MinIO or Cloudflare R2).

Objects are stored under ``<prefix><key>``. ``put`` streams through boto3's managed transfer: one
``PutObject`` for a small file, a multipart upload above ``part_bytes``, so a large output is never
held whole in memory and an object appears only once complete (S3 writes are atomic). Clients fetch
outputs through a presigned GET URL, or a public one when the bucket (or a CDN) serves it publicly.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterable, Iterator
from typing import Any, BinaryIO, cast
from urllib.parse import quote

import boto3
from boto3.exceptions import S3UploadFailedError
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from dispatcher.errors import OutputNotFound, StorageError
from dispatcher.settings import Settings
from dispatcher.storage import _check_key

log = logging.getLogger(__name__)

# S3's smallest multipart part (but the last) is 5 MiB; 8 MiB is boto3's own default.
MIN_PART_BYTES = 5 * 1024 * 1024
DEFAULT_PART_BYTES = 8 * 1024 * 1024
# Parts in flight for one upload: the chunks come from one stream, each part sits in memory until sent.
UPLOAD_CONCURRENCY = 4
_MISSING_CODES = frozenset({"NoSuchKey", "404", "NotFound"})


class _ChunkReader(io.RawIOBase):
    """A read-only, non-seekable file over an iterator of byte chunks (what ``upload_fileobj`` reads)."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        super().__init__()
        self._chunks: Iterator[bytes] = iter(chunks)
        self._pending = b""
        self.size = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        # Fill the whole buffer unless the chunks end: s3transfer takes a short read for the end of the file.
        view = memoryview(buffer).cast("B")
        filled = 0
        while filled < len(view):
            if not self._pending:
                chunk = next(self._chunks, None)
                if chunk is None:
                    break
                self._pending = bytes(chunk)
                continue
            count = min(len(view) - filled, len(self._pending))
            view[filled : filled + count] = self._pending[:count]
            self._pending = self._pending[count:]
            filled += count
        self.size += filled
        return filled


class S3Store:
    """Outputs as objects of one S3 bucket, under an optional key prefix.

    ``checksums`` is botocore's ``request_checksum_calculation``/``response_checksum_validation``:
    ``when_supported`` (AWS) or ``when_required`` for S3-compatible servers that reject the
    CRC checksums boto3 ≥ 1.36 sends by default. Without explicit credentials boto3's standard chain
    (``AWS_ACCESS_KEY_ID``..., ``~/.aws``, instance roles) applies.
    """

    def __init__(
        self,
        bucket: str,
        *,
        prefix: str = "",
        endpoint_url: str | None = None,
        region: str | None = None,
        path_style: bool = False,
        checksums: str = "when_supported",
        presign_seconds: int = 3600,
        public_url: str = "",
        part_bytes: int = DEFAULT_PART_BYTES,
        connect_timeout: float = 5.0,
        read_timeout: float = 60.0,
        max_attempts: int = 5,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        session_token: str | None = None,
    ) -> None:
        if part_bytes < MIN_PART_BYTES:
            raise ValueError(f"part_bytes must be at least {MIN_PART_BYTES} (S3's smallest part)")
        self.bucket = bucket
        prefix = prefix.strip("/")
        self.prefix = prefix + "/" if prefix else ""
        self.presign_seconds = presign_seconds
        self.public_url = public_url.rstrip("/")
        config = Config(
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            # "standard" retries 5xx, throttling and connection errors with jittered backoff.
            retries={"max_attempts": max_attempts, "mode": "standard"},
            s3={"addressing_style": "path" if path_style else "auto"},
            # SigV4 everywhere: botocore still presigns with SigV2 in some regions, which R2 and newer regions refuse.
            signature_version="s3v4",
            request_checksum_calculation=checksums,
            response_checksum_validation=checksums,
        )
        session = boto3.session.Session(
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            aws_session_token=session_token,
        )
        self.client: Any = session.client("s3", endpoint_url=endpoint_url or None, region_name=region, config=config)
        self.transfer = TransferConfig(
            multipart_threshold=part_bytes, multipart_chunksize=part_bytes, max_concurrency=UPLOAD_CONCURRENCY
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> S3Store:
        return cls(
            settings.s3_bucket,
            prefix=settings.s3_prefix,
            endpoint_url=settings.s3_endpoint_url or None,
            region=settings.s3_region or None,
            path_style=settings.s3_path_style,
            checksums=settings.s3_checksums,
            presign_seconds=settings.s3_presign_seconds,
            public_url=settings.s3_public_url,
        )

    def object_key(self, key: str) -> str:
        """The S3 object key of an output key."""
        return self.prefix + _check_key(key)

    def put(self, key: str, chunks: Iterable[bytes], content_type: str) -> int:
        reader = _ChunkReader(chunks)
        target = self.object_key(key)
        try:
            self.client.upload_fileobj(
                reader, self.bucket, target, ExtraArgs={"ContentType": content_type}, Config=self.transfer
            )
        except (BotoCoreError, ClientError, S3UploadFailedError) as exc:
            # Errors of the chunks' own source (the ComfyUI download) are not caught: they are not the store's.
            raise StorageError(f"storing s3://{self.bucket}/{target} failed: {exc}") from exc
        log.debug("stored s3://%s/%s (%d bytes)", self.bucket, target, reader.size)
        return reader.size

    def prepare(self, prefix: str) -> None:
        self.object_key(prefix)  # only checked: S3 has no folders to make

    def unprepare(self, prefix: str) -> None:
        self.object_key(prefix)

    def open(self, key: str) -> BinaryIO:
        try:
            target = self.object_key(key)
        except StorageError as exc:
            raise OutputNotFound(key) from exc
        try:
            reply = self.client.get_object(Bucket=self.bucket, Key=target)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in _MISSING_CODES:
                raise OutputNotFound(key) from exc
            raise StorageError(f"reading s3://{self.bucket}/{target} failed: {exc}") from exc
        except BotoCoreError as exc:
            raise StorageError(f"reading s3://{self.bucket}/{target} failed: {exc}") from exc
        # botocore's StreamingBody is an io.IOBase with read()/close(): what readers of BinaryIO use.
        return cast(BinaryIO, reply["Body"])

    def url(self, key: str) -> str | None:
        target = self.object_key(key)
        if self.public_url:
            return f"{self.public_url}/{quote(target, safe='/')}"
        try:
            url: str = self.client.generate_presigned_url(
                "get_object", Params={"Bucket": self.bucket, "Key": target}, ExpiresIn=self.presign_seconds
            )
        except BotoCoreError as exc:  # no credentials to sign with
            raise StorageError(f"cannot presign s3://{self.bucket}/{target}: {exc}") from exc
        return url
