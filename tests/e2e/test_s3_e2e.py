"""Outputs in S3 (moto's server) through real processes: a presigned URL serves the PNG, so does the API."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

from tests.moto_s3 import CREDENTIALS, MotoS3
from tests.support_stack import LocalStack, first_pixel, submit

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


def test_a_run_output_is_stored_in_s3_and_served_by_a_presigned_url(redis_url: str, tmp_path: Path) -> None:
    with MotoS3(tmp_path / "moto.log") as moto:
        bucket = moto.bucket()
        env = CREDENTIALS | {
            "COMFY_DISPATCH_STORAGE": "s3",
            "COMFY_DISPATCH_S3_BUCKET": bucket,
            "COMFY_DISPATCH_S3_PREFIX": "e2e",
            "COMFY_DISPATCH_S3_ENDPOINT_URL": moto.url,
            "COMFY_DISPATCH_S3_PATH_STYLE": "true",
            "COMFY_DISPATCH_S3_CHECKSUMS": "when_required",
            "COMFY_DISPATCH_S3_PRESIGN_SECONDS": "300",
        }
        with LocalStack(redis_url, tmp_path, workers=1, env=env) as stack:
            session = requests.Session()
            run_id = submit(session, stack.api, "invert", {"params": {"width": 8, "height": 8, "color": 0xFF0000}})
            run = session.get(f"{stack.api}/v1/runs/{run_id}", params={"wait": 60}, timeout=70).json()
            assert run["status"] == "succeeded", f"{run}\n{stack.logs()}"  # a str: shown whole
            (output,) = run["outputs"]

            url = urlsplit(output["url"])
            assert f"{url.scheme}://{url.netloc}" == moto.url
            assert url.path == f"/{bucket}/e2e/{run_id}/1/{output['filename']}"
            assert "X-Amz-Signature=" in url.query and "X-Amz-Expires=300" in url.query
            direct = requests.get(output["url"], timeout=10)  # no API key: the signature is the permission
            assert direct.status_code == 200 and direct.headers["Content-Type"] == "image/png"
            assert first_pixel(direct.content) == (0, 255, 255)

            via_api = session.get(f"{stack.api}/v1/runs/{run_id}/outputs/{output['filename']}", timeout=10)
            assert via_api.status_code == 200 and via_api.content == direct.content
            assert via_api.headers["content-type"] == "image/png"
            assert len(direct.content) == output["size"]
            assert not (tmp_path / "outputs").exists()  # nothing went to local storage
