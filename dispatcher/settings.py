"""Typed settings read from an environment mapping (prefix ``COMFY_DISPATCH_``).

Every process (API, worker, fake ComfyUI, ``up``) reads the same settings;
CLI flags override them. Nothing here reads ``os.environ`` at import time:
callers pass the environment in, so tests can build settings from a dict.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from dispatcher.addresses import AllowList
from dispatcher.errors import ConfigError

PREFIX = "COMFY_DISPATCH_"
PROJECT_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseModel):
    """All settings of Comfy Dispatch; each field is ``COMFY_DISPATCH_<NAME>`` in the environment."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    redis_url: str = Field("redis://127.0.0.1:6379/0", description="Redis holding queues, runs and leases")
    comfyui_url: str = Field("http://127.0.0.1:8188", description="the ComfyUI a worker drives")
    comfyui_urls: list[str] = Field(
        default_factory=lambda: ["http://127.0.0.1:8188"], description="ComfyUIs `up` starts one worker for each"
    )
    output_dir: Path = Field(Path("./outputs"), description="where local storage keeps run outputs")
    comfyui_output_dir: Path | None = Field(
        None,
        description="ComfyUI's own output folder, where a worker on ComfyUI's host reads outputs from instead of "
        "downloading them over /view; unset: /view",
    )
    workflows_dir: Path = Field(PROJECT_ROOT / "workflows", description="folder of workflow templates")
    queue_name: str = Field("comfy-dispatch", description="the one RQ queue workers pull from")
    public_url: str = Field("", description="base URL clients reach the API on (for output URLs); empty: relative")
    max_body_bytes: int = Field(1_048_576, ge=1024, description="largest accepted request body")
    input_max_bytes: int = Field(5 * 1024 * 1024, ge=1024, description="largest input image (upload, base64, URL)")
    lease_seconds: float = Field(15.0, gt=1, description="a run's lease; renewed every third of it while running")
    comfyui_timeout: float = Field(10.0, gt=0, description="timeout of each HTTP call to ComfyUI, in seconds")
    run_timeout: float = Field(3600.0, gt=0, description="default time limit of one run, in seconds")
    max_attempts: int = Field(3, ge=1, description="default attempts per run (workflows may override)")
    run_ttl_seconds: int = Field(7 * 86400, ge=60, description="how long finished runs are kept")
    worker_heartbeat: float = Field(2.0, gt=0, description="seconds between worker heartbeats")
    pipeline_depth: int = Field(
        2, ge=1, le=16, description="runs a worker holds at once: posted to its ComfyUI behind the one executing"
    )
    log_level: str = Field("INFO", description="logging level")
    auth: str = Field("enabled", description="API keys required (enabled), or not at all (disabled: loopback only)")
    redis_appendfsync: Literal["always", "everysec", "no"] = Field(
        "everysec", description="when the Redis that `up` starts syncs its AOF to disk (always: before every reply)"
    )
    access_token_seconds: int = Field(
        3600, ge=60, le=30 * 86400, description="lifetime of an access token minted from an API key (Comflowy's)"
    )
    max_waits_per_tenant: int = Field(
        100, ge=1, description="requests of one tenant waiting at once on one API process (?wait=, event streams)"
    )
    submit_rate: float = Field(10.0, gt=0, description="default admission rate per API key, runs per second")
    submit_burst: int = Field(100, ge=1, description="default admission burst per API key")
    dispatch_rate: float = Field(0.0, ge=0, description="default dispatch rate per tenant, runs/s (0: no limit)")
    max_running: int = Field(0, ge=0, description="default most runs in flight per tenant (0: no limit)")
    max_queued: int = Field(100_000, ge=0, description="default most queued runs per tenant (0: no limit)")
    model_affinity: bool = Field(
        True, description="send a run to a worker whose ComfyUI has its checkpoint loaded, when one can take it"
    )
    affinity_wait_seconds: float = Field(
        10.0,
        ge=0,
        description="longest a run waits for a busy worker that has its checkpoint loaded while another capable "
        "one is free (0: never waits)",
    )
    warmup_workflow: str = Field(
        "", description="a workflow each worker runs on its ComfyUI before it takes runs ('' for none)"
    )
    warmup_params: str = Field("{}", description="the warm-up workflow's parameters, a JSON object")
    unservable_runs: Literal["refuse", "queue"] = Field(
        "refuse",
        description="a run no worker's ComfyUI can run (a node class, a model file missing): refused at submit "
        "(422 naming what is missing), or queued until a worker that can comes (fleets that scale on demand)",
    )
    retry_base: float = Field(1.0, gt=0, description="first retry backoff ceiling, seconds (doubles each attempt)")
    retry_cap: float = Field(60.0, gt=0, description="largest retry backoff, seconds")
    dispatch_timeout: float = Field(
        30.0, gt=0, description="a dispatched run nobody claimed by then is dispatched again"
    )
    callback_allow: str = Field(
        "", description="non-public networks callbacks may reach: loopback, private, link-local, CIDRs, all"
    )
    webhook_queue: str = Field("comfy-dispatch-webhooks", description="the RQ queue of webhook deliveries")
    webhook_timeout: float = Field(10.0, gt=0, description="timeout of each webhook delivery, in seconds")
    webhook_retry_for: float = Field(3600.0, gt=0, description="how long a failed webhook delivery is retried, s")
    webhook_retry_base: float = Field(2.0, gt=0, description="shortest wait between webhook delivery attempts, s")
    webhook_retry_cap: float = Field(300.0, gt=0, description="longest wait between webhook delivery attempts, s")
    cache_ttl: float = Field(300.0, gt=0, description="how long a result stays in the result cache, seconds")
    idempotency_ttl: int = Field(86400, ge=60, description="how long an Idempotency-Key is remembered, seconds")
    storage: str = Field("local", description="where run outputs are kept: local (output_dir) or s3")
    s3_endpoint_url: str = Field("", description="S3 endpoint (MinIO, R2...); empty: AWS for the region")
    s3_region: str = Field("", description="S3 region; empty: from the AWS config chain")
    s3_prefix: str = Field("", description="key prefix of every object in the bucket")
    s3_path_style: bool = Field(False, description="path-style addressing (endpoint/bucket/key), as MinIO needs")
    s3_checksums: str = Field("when_supported", description="when_supported, or when_required for S3-compatibles")
    s3_presign_seconds: int = Field(3600, ge=1, le=7 * 86400, description="lifetime of presigned output URLs")
    s3_public_url: str = Field("", description="public base URL of the bucket's objects; empty: presigned URLs")
    # After `storage`: its validator reads it; validate_default so an unset bucket is checked too.
    s3_bucket: str = Field("", validate_default=True, description="bucket of run outputs (storage=s3)")
    capabilities_refresh_seconds: float = Field(
        300, gt=0, description="how often a worker reads its ComfyUI's node classes and model files again, seconds"
    )

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str) -> str:
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return value

    @field_validator("comfyui_url", "public_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value.rstrip("/")

    @field_validator("comfyui_urls", mode="before")
    @classmethod
    def _split_urls(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("comfyui_urls")
    @classmethod
    def _http_urls(cls, value: list[str]) -> list[str]:
        for url in value:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"{url!r} must be an http:// or https:// URL")
        return [url.rstrip("/") for url in value]

    @field_validator("auth")
    @classmethod
    def _auth(cls, value: str) -> str:
        if value.lower() not in ("enabled", "disabled"):
            raise ValueError("must be enabled or disabled")
        return value.lower()

    @field_validator("callback_allow")
    @classmethod
    def _allow_list(cls, value: str) -> str:
        AllowList.parse(value)  # raises ValueError naming the bad entry
        return value

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        if value.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            raise ValueError("must be DEBUG, INFO, WARNING, ERROR or CRITICAL")
        return value.upper()

    @field_validator("storage")
    @classmethod
    def _storage(cls, value: str) -> str:
        if value.lower() not in ("local", "s3"):
            raise ValueError("must be local or s3")
        return value.lower()

    @field_validator("s3_checksums")
    @classmethod
    def _checksums(cls, value: str) -> str:
        if value.lower() not in ("when_supported", "when_required"):
            raise ValueError("must be when_supported or when_required")
        return value.lower()

    @field_validator("s3_endpoint_url", "s3_public_url")
    @classmethod
    def _s3_urls(cls, value: str) -> str:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value.rstrip("/")

    @field_validator("s3_bucket")
    @classmethod
    def _bucket_for_s3(cls, value: str, info: ValidationInfo) -> str:
        if info.data.get("storage") == "s3" and not value.strip():
            raise ValueError("must be set when COMFY_DISPATCH_STORAGE is s3")
        return value.strip()


def load_settings(environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Build settings from ``environ`` (default: the process environment) and CLI overrides.

    Overrides whose value is None are ignored, so CLI options can pass through
    unset flags. Raises :class:`ConfigError` naming the first bad setting.
    """
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for key, value in env.items():
        if key.startswith(PREFIX):
            name = key[len(PREFIX) :].lower()
            if name in Settings.model_fields:
                values[name] = value
    values.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return Settings.model_validate(values)
    except ValidationError as exc:
        err = exc.errors()[0]
        name = str(err["loc"][0]) if err["loc"] else "?"
        raise ConfigError(PREFIX + name.upper(), err["msg"]) from None
