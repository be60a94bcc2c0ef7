"""Uploaded input images: their bytes in the output store, a Redis record per upload, and the API's checks.

Bytes live in the :class:`~dispatcher.storage.OutputStore` under ``uploads/<tenant>/<id>/image.<ext>``,
so a worker on another machine reads them through the same store as the API wrote them. A Redis hash
per upload (tenant, name, content type, size, store key) expires after ``ttl_seconds`` (24 h); it is
looked up under its tenant, so another tenant's upload is simply not found. Ids are content-addressed
(:func:`dispatcher.inputs.upload_id`): storing the same image again refreshes its record.

:func:`check_run_images` is what the API runs before queuing a run: every image value is checked and
inline images stored, so a bad input is a 422 naming its parameter and nothing is queued.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from redis import Redis

from dispatcher import keys
from dispatcher.addresses import AddressNotAllowed, AllowList, Resolver, check_url, system_resolver
from dispatcher.binding import image_values
from dispatcher.errors import ParameterError
from dispatcher.inputs import CONTENT_TYPES, DataImage, UploadImage, UrlImage, base64_size, parse_image
from dispatcher.settings import Settings
from dispatcher.storage import OutputStore
from dispatcher.workflows import Registry, Workflow

log = logging.getLogger(__name__)

UPLOAD_TTL_SECONDS = 24 * 3600
MAX_NAME_LENGTH = 255
# Room in a run body for one base64 image beyond max_body_bytes: JSON escapes ("\/") and MIME line
# breaks ("\r\n" every 76 characters, escaped to 4) add up to ~6%; 1/8 more leaves a margin.
BASE64_SLACK_DIVISOR = 8
BODY_SLACK_BYTES = 4096
_UNSAFE_NAME_RE = re.compile(r'[\x00-\x1f\x7f/\\"]')


@dataclass(frozen=True)
class Upload:
    """One stored input image."""

    id: str
    tenant: str
    name: str
    content_type: str
    size: int
    key: str  # where the output store keeps the bytes
    created_at: float

    def to_redis(self) -> dict[str, str]:
        return {
            "id": self.id,
            "tenant": self.tenant,
            "name": self.name,
            "content_type": self.content_type,
            "size": str(self.size),
            "key": self.key,
            "created_at": repr(self.created_at),
        }

    @classmethod
    def from_redis(cls, data: Mapping[str, str]) -> Upload:
        return cls(
            id=data["id"],
            tenant=data["tenant"],
            name=data.get("name", ""),
            content_type=data["content_type"],
            size=int(data["size"]),
            key=data["key"],
            created_at=float(data.get("created_at") or 0.0),
        )


def clean_name(name: str, content_type: str) -> str:
    """A display name from a client's file name: no path, no control characters, bounded; a default if empty."""
    base = re.split(r"[/\\]", name)[-1]
    base = _UNSAFE_NAME_RE.sub("_", base).strip()[:MAX_NAME_LENGTH]
    return base or "image" + CONTENT_TYPES[content_type]


class Uploads:
    """Stores and finds uploaded images of tenants (``redis`` must decode responses)."""

    def __init__(self, redis: Redis, store: OutputStore, *, ttl_seconds: int = UPLOAD_TTL_SECONDS) -> None:
        self.redis = redis
        self.store = store
        self.ttl_seconds = ttl_seconds

    def put(self, tenant: str, image: DataImage, name: str = "") -> Upload:
        """Store ``image`` for ``tenant`` (bytes first, then the record: a record never names missing bytes)."""
        ident = image.upload_id
        key = f"uploads/{tenant}/{ident}/image{CONTENT_TYPES[image.content_type]}"
        size = self.store.put(key, [image.data], image.content_type)
        upload = Upload(ident, tenant, clean_name(name, image.content_type), image.content_type, size, key, time.time())
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(keys.upload(tenant, ident), mapping=dict(upload.to_redis().items()))
            pipe.expire(keys.upload(tenant, ident), self.ttl_seconds)
            pipe.execute()
        log.info("stored upload %s of %s: %s, %d bytes", ident, tenant, upload.content_type, size)
        return upload

    def get(self, tenant: str, ident: str, *, touch: bool = False) -> Upload | None:
        """The upload ``ident`` of ``tenant``, or None (unknown, expired, another tenant's).

        ``touch`` restarts its time to live: a run that will use it counts as a use.
        """
        data: dict[str, str] = self.redis.hgetall(keys.upload(tenant, ident))  # type: ignore[assignment]
        if not data or data.get("tenant") != tenant:
            return None
        if touch:
            self.redis.expire(keys.upload(tenant, ident), self.ttl_seconds)
        return Upload.from_redis(data)

    def read(self, upload: Upload) -> bytes:
        """The upload's bytes; raises OutputNotFound if the store lost them."""
        with self.store.open(upload.key) as fh:
            return fh.read()


def check_run_images(
    uploads: Uploads,
    workflow: Workflow,
    body: Mapping[str, Any],
    *,
    tenant: str,
    allow: AllowList,
    max_bytes: int,
    resolve: Resolver = system_resolver,
) -> None:
    """Check every image value of a run ``body`` before the run is queued; store its inline images.

    URLs must pass the address rules (resolved now; the worker checks again when it fetches), uploads
    must exist for ``tenant``, inline images must be PNG, JPEG, WebP or GIF of at most ``max_bytes``.
    Raises ``ParameterError`` naming the parameter. Every value is checked before any is stored.
    """
    sources = [(name, parse_image(name, value, max_bytes=max_bytes)) for name, value in image_values(workflow, body)]
    for name, source in sources:
        if isinstance(source, UrlImage):
            try:
                check_url(source.url, allow, resolve=resolve)
            except AddressNotAllowed as exc:
                raise ParameterError(name, str(exc)) from None
        elif isinstance(source, UploadImage) and uploads.get(tenant, source.id, touch=True) is None:
            raise ParameterError(name, f"upload {source.id} does not exist or has expired (uploads last 24 h)")
    for _, source in sources:
        if isinstance(source, DataImage):
            uploads.put(tenant, source)


def run_body_limit(settings: Settings, registry: Registry, workflow_id: str | None) -> int:
    """The largest body a run of ``workflow_id`` may send: ``max_body_bytes``, plus room for each image in base64.

    With no workflow id (Comflowy names it inside the body) the workflow taking the most images counts. No I/O:
    the versions this process knows count (the caller reads a workflow it does not know first).
    """
    if workflow_id is None:
        images = max((_image_params(w) for w in registry.known()), default=0)
    else:
        workflow = registry.peek(workflow_id)
        images = _image_params(workflow) if workflow is not None else 0
    per_image = base64_size(settings.input_max_bytes)
    return settings.max_body_bytes + images * (per_image + per_image // BASE64_SLACK_DIVISOR + BODY_SLACK_BYTES)


def _image_params(workflow: Workflow) -> int:
    return sum(1 for param in workflow.params.values() if param.type == "image")
