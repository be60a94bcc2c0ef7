"""A run's input images on the worker: fetch or read each one, upload it to this worker's ComfyUI, bind its name.

Binding marked which graph inputs are image parameters (:func:`dispatcher.inputs.mark_image_input`) and
left there a URL or ``upload:<id>``. Here each becomes a file in ComfyUI's input folder, named after the
run (``comfy-dispatch/cd_<run id>_<param>.<ext>``): runs never share a file, and a retry on the same
ComfyUI writes the same name again instead of piling up copies.

A fetch that cannot succeed (404, too large, not an image, an address the rules refuse) fails the run
for good, naming the parameter; a network error or a 5xx is transient (the run is retried). So is
ComfyUI refusing the upload: that is the GPU node's trouble, not the input's.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import requests

from dispatcher import safehttp
from dispatcher.addresses import AddressNotAllowed, AllowList
from dispatcher.errors import (
    ComfyUIError,
    ComfyUIUnavailable,
    InputImageError,
    InputImageUnavailable,
    OutputNotFound,
    ParameterError,
)
from dispatcher.inputs import CONTENT_TYPES, UploadImage, UrlImage, check_image, parse_bound, take_marks
from dispatcher.runs import Run
from dispatcher.uploads import Uploads
from worker.context import WorkerContext

log = logging.getLogger(__name__)

SUBFOLDER = "comfy-dispatch"
# Each connect and each read; a URL that trickles bytes is bounded by the size limit and this per read.
FETCH_TIMEOUT_SECONDS = 30.0
MAX_REDIRECTS = 3
# Statuses worth another try later; any other non-2xx answer will not change by itself.
TRANSIENT_STATUSES = frozenset({408, 425, 429})
# What a server may say it sends; the bytes themselves decide which image type it is.
ACCEPTED_CONTENT_TYPES = ("image/", "application/octet-stream", "binary/octet-stream")
_SAFE_RE = re.compile(r"[^A-Za-z0-9_-]")


def resolve_images(ctx: WorkerContext, run: Run, graph: dict[str, Any]) -> dict[str, Any]:
    """Bind, in ``graph`` itself (the attempt's own copy), every marked image input, uploaded to ``ctx.client``
    and named as ComfyUI named it; returns ``graph``.

    Raises InputImageError (permanent, naming the parameter), InputImageUnavailable (the source, for now)
    or ComfyUIUnavailable (this worker's ComfyUI would not take the upload).
    """
    done: dict[str, str] = {}  # parameter -> the name ComfyUI gave it (one parameter may feed several nodes)
    for node in graph.values():
        for input_name, param in take_marks(node).items():
            value = node["inputs"].get(input_name)
            source = parse_bound(value)
            if source is None:
                log.warning("run %s: image input %s is %r, neither a URL nor an upload; kept", run.id, param, value)
                continue
            if param not in done:
                data, content_type = _read(ctx, run, param, source)
                done[param] = _upload(ctx, run, param, data, content_type)
            node["inputs"][input_name] = done[param]
    return graph


def _read(ctx: WorkerContext, run: Run, param: str, source: UrlImage | UploadImage) -> tuple[bytes, str]:
    max_bytes = ctx.settings.input_max_bytes
    if isinstance(source, UrlImage):
        data = _fetch(ctx, param, source.url)
    else:
        uploads = Uploads(ctx.conns.text, ctx.store)
        upload = uploads.get(run.tenant, source.id)  # the run's own tenant: never another's upload
        if upload is None:
            raise InputImageError(param, f"upload {source.id} does not exist or has expired")
        try:
            data = uploads.read(upload)
        except OutputNotFound:
            raise InputImageError(param, f"the bytes of upload {source.id} are missing from the store") from None
    try:
        return data, check_image(param, data, max_bytes=max_bytes)
    except ParameterError as exc:
        raise InputImageError(param, exc.detail) from None


def _fetch(ctx: WorkerContext, param: str, url: str) -> bytes:
    allow = AllowList.parse(ctx.settings.callback_allow)
    try:
        reply = safehttp.request(
            "GET",
            url,
            allow=allow,
            timeout=FETCH_TIMEOUT_SECONDS,
            max_bytes=ctx.settings.input_max_bytes,
            headers={"Accept": ", ".join(CONTENT_TYPES)},
            max_redirects=MAX_REDIRECTS,
        )
    except AddressNotAllowed as exc:  # a refused address, too many redirects, or larger than the limit
        raise InputImageError(param, f"cannot fetch {url}: {exc}") from None
    except requests.RequestException as exc:
        raise InputImageUnavailable(param, f"cannot fetch {url} now: {type(exc).__name__}: {exc}") from exc
    if reply.status >= 500 or reply.status in TRANSIENT_STATUSES:
        raise InputImageUnavailable(param, f"{url} answered HTTP {reply.status}")
    if not 200 <= reply.status < 300:
        raise InputImageError(param, f"{url} answered HTTP {reply.status}")
    declared = next((v for k, v in reply.headers.items() if k.lower() == "content-type"), "").strip().lower()
    if declared and not declared.startswith(ACCEPTED_CONTENT_TYPES):
        raise InputImageError(param, f"{url} serves {declared.split(';')[0]}, not an image")
    return reply.content


def _upload(ctx: WorkerContext, run: Run, param: str, data: bytes, content_type: str) -> str:
    filename = f"cd_{run.id}_{_SAFE_RE.sub('_', param)}{CONTENT_TYPES[content_type]}"
    try:
        reply = ctx.client.upload_image(data, filename, subfolder=SUBFOLDER, overwrite=True)
        name, subfolder = str(reply["name"]), str(reply.get("subfolder") or "")
    except (ComfyUIError, KeyError, TypeError) as exc:
        # Whatever ComfyUI answered, the input itself was fine: another try (maybe elsewhere) may work.
        raise ComfyUIUnavailable(f"{param}: uploading the input image to ComfyUI failed: {exc}") from exc
    log.info("run %s: input %s uploaded to %s as %s/%s", run.id, param, ctx.client.base_url, subfolder, name)
    # LoadImage takes "subfolder/name" relative to ComfyUI's input folder, as its own upload widget writes.
    return f"{subfolder}/{name}" if subfolder else name
