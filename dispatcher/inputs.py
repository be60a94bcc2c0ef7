"""Input images of runs: what a value of an ``image`` parameter may be, and checks of image bytes. Pure, no I/O.

A value is one of:

* an ``http(s)://`` URL, which the worker fetches at run time (size-limited, address rules of
  :mod:`dispatcher.addresses`);
* base64 data, raw or as a ``data:image/...;base64,`` URI;
* an upload: ``upload:<id>`` or the bare ``<id>`` that ``POST /v1/uploads`` returned.

Base64 images are stored as uploads by the API (:mod:`dispatcher.uploads`), so a bound graph never
carries megabytes of base64: binding writes ``upload:<id>`` in its place. Upload ids are the first
128 bits of the image's sha256, so the API (which stores the bytes) and binding (which only names
them) agree on the id without talking to each other, and the same image sent twice is stored once.

ComfyUI's own input file names are not accepted: ``LoadImage`` reads any file of its input folder
(and of its output folder with ``"name [output]"``), which would let one tenant read another's images.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from dispatcher.errors import ParameterError

UPLOAD_PREFIX = "upload:"
UPLOAD_ID_RE = re.compile(r"^[0-9a-f]{32}$")
MAX_URL_LENGTH = 2048
# Marks, in a bound graph node's ``_meta``, which of its inputs are image parameters: the worker must
# resolve exactly those (a prompt text that happens to be a URL must never be fetched). ComfyUI ignores
# ``_meta``; the worker removes the mark anyway before posting.
MARK = "comfy_dispatch_images"

# Magic bytes of the only formats accepted: what ComfyUI's LoadImage (PIL) reads and browsers show.
CONTENT_TYPES = {"image/png": ".png", "image/jpeg": ".jpg", "image/webp": ".webp", "image/gif": ".gif"}
_BASE64_RE = re.compile(r"^[A-Za-z0-9+/]+={0,2}$")
_DATA_URI_RE = re.compile(r"^data:(?P<type>[^,;]*)(?P<params>(;[^,;]*)*),(?P<data>.*)$", re.DOTALL | re.IGNORECASE)
ACCEPTED = "an http(s) URL, base64 data (raw or a data:image/...;base64, URI) or an upload id (upload:<id>)"


@dataclass(frozen=True)
class UrlImage:
    """An image the worker fetches from ``url`` when the run starts."""

    url: str


@dataclass(frozen=True)
class DataImage:
    """An image given inline: its decoded bytes and their sniffed content type."""

    data: bytes
    content_type: str

    @property
    def upload_id(self) -> str:
        return upload_id(self.data)


@dataclass(frozen=True)
class UploadImage:
    """An image stored earlier with ``POST /v1/uploads`` (or from an inline image)."""

    id: str


ImageSource = UrlImage | DataImage | UploadImage


def upload_id(data: bytes) -> str:
    """The id of an uploaded image: 32 hex digits of its sha256 (content-addressed, see the module docs)."""
    return hashlib.sha256(data).hexdigest()[:32]


def sniff(data: bytes) -> str | None:
    """The content type of ``data`` from its magic bytes, if it is a PNG, JPEG, WebP or GIF; else None."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    return None


def check_image(name: str, data: bytes, *, max_bytes: int | None) -> str:
    """Return the content type of ``data``; raise ``ParameterError(name, ...)`` if too large or not an image."""
    if max_bytes is not None and len(data) > max_bytes:
        raise ParameterError(name, f"the image is {len(data)} bytes, more than the limit of {max_bytes}")
    if not data:
        raise ParameterError(name, "the image is empty")
    content_type = sniff(data)
    if content_type is None:
        raise ParameterError(name, "is not a PNG, JPEG, WebP or GIF image")
    return content_type


def base64_size(n: int) -> int:
    """How many base64 characters encode ``n`` bytes (with padding)."""
    return 4 * ((n + 2) // 3)


def parse_image(name: str, value: Any, *, max_bytes: int | None = None) -> ImageSource:
    """Tell which kind of image ``value`` is; inline data is decoded and checked (type, ``max_bytes``).

    Raises ``ParameterError(name, ...)`` for anything else. A URL's address is not checked here (that
    needs DNS: :func:`dispatcher.addresses.check_url`), only its form.
    """
    if not isinstance(value, str) or not value.strip():
        raise ParameterError(name, f"must be a non-empty string: {ACCEPTED}")
    text = value.strip()
    if text.startswith(UPLOAD_PREFIX) or UPLOAD_ID_RE.match(text):
        ident = text.removeprefix(UPLOAD_PREFIX)
        if not UPLOAD_ID_RE.match(ident):
            raise ParameterError(name, f"{ident[:40]!r} is not an upload id (32 hex digits from POST /v1/uploads)")
        return UploadImage(ident)
    if text[:8].lower().startswith(("http://", "https://")):
        return UrlImage(_check_url_form(name, text))
    if text[:5].lower() == "data:":
        return _data_uri(name, text, max_bytes)
    return DataImage(*_decode(name, text, max_bytes))


def canonical_image(name: str, value: Any) -> str:
    """The form a bound graph keeps: the URL, or ``upload:<id>`` (inline data becomes the id of its bytes)."""
    source = parse_image(name, value)
    if isinstance(source, UrlImage):
        return source.url
    ident = source.id if isinstance(source, UploadImage) else source.upload_id
    return UPLOAD_PREFIX + ident


def parse_bound(value: Any) -> UrlImage | UploadImage | None:
    """Read back what :func:`canonical_image` wrote; None for anything else (a template's own file name)."""
    if isinstance(value, str) and value.startswith(UPLOAD_PREFIX) and UPLOAD_ID_RE.match(value[len(UPLOAD_PREFIX) :]):
        return UploadImage(value[len(UPLOAD_PREFIX) :])
    if isinstance(value, str) and value[:8].lower().startswith(("http://", "https://")):
        return UrlImage(value)
    return None


def mark_image_input(node: dict[str, Any], input_name: str, param: str) -> None:
    """Note in ``node``'s ``_meta`` that ``input_name`` holds the image parameter ``param``."""
    meta = node.setdefault("_meta", {})
    meta.setdefault(MARK, {})[input_name] = param


def take_marks(node: dict[str, Any]) -> dict[str, str]:
    """Remove and return a node's image marks: ``{input name: parameter name}`` (empty if none)."""
    meta = node.get("_meta")
    if not isinstance(meta, dict):
        return {}
    marks = meta.pop(MARK, None)
    if not meta:
        del node["_meta"]
    return {str(k): str(v) for k, v in marks.items()} if isinstance(marks, dict) else {}


def _check_url_form(name: str, url: str) -> str:
    if len(url) > MAX_URL_LENGTH:
        raise ParameterError(name, f"the URL is longer than {MAX_URL_LENGTH} characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ParameterError(name, "is not a valid URL") from None
    if not parts.hostname:
        raise ParameterError(name, "the URL has no host")
    if parts.username or parts.password:
        raise ParameterError(name, "URLs with credentials are not accepted")
    return url


def _data_uri(name: str, text: str, max_bytes: int | None) -> DataImage:
    match = _DATA_URI_RE.match(text)
    if match is None:
        raise ParameterError(name, "is not a valid data: URI (data:image/png;base64,...)")
    params = [p.strip().lower() for p in match["params"].split(";") if p.strip()]
    if "base64" not in params:
        raise ParameterError(name, "a data: URI must be base64-encoded (data:image/png;base64,...)")
    declared = match["type"].strip().lower()
    if declared and not declared.startswith("image/") and declared != "application/octet-stream":
        raise ParameterError(name, f"a data: URI of type {declared!r} is not an image")
    # The declared type is not trusted: the bytes decide (see check_image).
    return DataImage(*_decode(name, match["data"], max_bytes))


def _decode(name: str, text: str, max_bytes: int | None) -> tuple[bytes, str]:
    compact = "".join(text.split())  # MIME base64 has line breaks; str.split is 15x faster than a regex here
    # Refuse what cannot fit before decoding megabytes of it.
    if max_bytes is not None and len(compact) > base64_size(max_bytes):
        raise ParameterError(name, f"the image is more than the limit of {max_bytes} bytes")
    try:
        data = base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        # Only now look closer, to tell a mistyped value (a file name...) from broken base64.
        if _BASE64_RE.match(compact):
            raise ParameterError(name, "is not valid base64 (wrong length or padding)") from None
        raise ParameterError(name, f"is not {ACCEPTED}") from None
    return data, check_image(name, data, max_bytes=max_bytes)
