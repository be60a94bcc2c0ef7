"""A real S3 HTTP endpoint for tests: moto's server mode as a child process on a free loopback port."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path
from types import TracebackType
from typing import Any

import boto3

from dispatcher.redis_server import free_port
from dispatcher.storage_s3 import S3Store
from tests.support import wait_http

# moto accepts any credentials; explicit ones keep a developer's own ~/.aws out of the tests.
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


class MotoS3:
    """``python -m moto.server`` on 127.0.0.1, logged to a file; ``bucket()`` creates a fresh bucket."""

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> MotoS3:
        with self.log_path.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        wait_http(self.url + "/moto-api/", timeout=30)
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)

    def __enter__(self) -> MotoS3:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def client(self) -> Any:
        """A plain boto3 client of this server, to look at objects behind the store's back."""
        return boto3.client(
            "s3",
            endpoint_url=self.url,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    def bucket(self) -> str:
        name = f"test-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def store(self, bucket: str, **options: Any) -> S3Store:
        options = {"endpoint_url": self.url, "region": "us-east-1"} | options
        return S3Store(bucket, access_key_id="testing", secret_access_key="testing", **options)
