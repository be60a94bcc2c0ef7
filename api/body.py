"""Reading a request's JSON object body ourselves, with a size limit.

FastAPI's own body parsing would answer malformed JSON with a 422 and read a body of any size;
here malformed JSON is a 400 and a body over ``settings.max_body_bytes`` a 413, whether its size
is announced (Content-Length, refused before reading) or not (chunked, counted while reading).
Content-Type is not checked: the seeds' clients (``curl -d``) often send none or a form type.
"""

from __future__ import annotations

import json
from typing import Any, NoReturn

from fastapi import Request

from dispatcher.errors import BadRequest, PayloadTooLarge


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The raw body, refused with :class:`PayloadTooLarge` as soon as it passes ``max_bytes``."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            length = int(declared)
        except ValueError:
            raise BadRequest("Content-Length is not a number") from None
        if length > max_bytes:
            raise PayloadTooLarge(max_bytes)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise PayloadTooLarge(max_bytes)
        chunks.append(chunk)
    return b"".join(chunks)


_JSON_TYPES: dict[type, str] = {
    list: "an array",
    str: "a string",
    int: "a number",
    float: "a number",
    bool: "a boolean",
    type(None): "null",
}


def _no_constant(name: str) -> NoReturn:
    # json accepts NaN and Infinity, which are not JSON and which no workflow input can take.
    raise ValueError(f"{name} is not valid JSON")


def parse_object(raw: bytes) -> dict[str, Any]:
    """Parse a JSON object; an empty body counts as ``{}`` (a run of a workflow whose parameters all have defaults)."""
    if not raw.strip():
        return {}
    try:
        value = json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
    except UnicodeDecodeError:
        raise BadRequest("request body is not UTF-8 text") from None
    except ValueError as exc:  # JSONDecodeError is a ValueError, and so is _no_constant's
        raise BadRequest(f"request body is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise BadRequest(f"request body must be a JSON object, not {_JSON_TYPES.get(type(value), 'that')}")
    return value


async def read_json_object(request: Request, max_bytes: int) -> dict[str, Any]:
    """Read and parse the body as a JSON object; BadRequest (400) or PayloadTooLarge (413) otherwise."""
    return parse_object(await read_body(request, max_bytes))
