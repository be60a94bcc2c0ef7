"""Reading a request's JSON object body ourselves, with a size limit.

FastAPI's own body parsing would answer malformed JSON with a 422 and read a body of any size;
here malformed JSON is a 400 and a body over ``settings.max_body_bytes`` a 413, whether its size
is announced (Content-Length, refused before reading) or not (chunked, counted while reading).
Content-Type is not checked: the seeds' clients (``curl -d``) often send none or a form type.

Two kinds of valid JSON are refused too (400), before any route sees them: a body nested deeper than
:data:`MAX_DEPTH` (a run body needs 3 levels; a thousand would make ``json`` and every later walk
recurse out of stack), and a string holding a lone UTF-16 surrogate (``"\\ud800"``: a valid escape that
is no Unicode text). Such a string cannot be encoded as UTF-8, so once stored it breaks every answer
that shows it; it is refused here, naming where it is, so no run ever holds one.
"""

from __future__ import annotations

import itertools
import json
import re
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


MAX_DEPTH = 32
"""Levels of arrays and objects a request body may nest (the body itself is the first)."""

TOO_DEEP = f"request body is nested too deeply: more than {MAX_DEPTH} levels of arrays and objects"
# A JSON string: what is inside one is no nesting. Written to scan once (no backtracking) over valid JSON.
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_STEP = [1 if b in b"[{" else -1 for b in range(256)]
# Strict UTF-8 refuses encoded surrogates, so a lone one can only come from a \uD800 to \uDFFF escape.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89abcdefABCDEF]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def parse_object(raw: bytes) -> dict[str, Any]:
    """Parse a JSON object; an empty body counts as ``{}`` (a run of a workflow whose parameters all have defaults)."""
    if not raw.strip():
        return {}
    try:
        value = json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
    except UnicodeDecodeError:
        raise BadRequest("request body is not UTF-8 text") from None
    except RecursionError:  # json's scanner recurses once per level: a thousand levels exhaust the stack
        raise BadRequest(TOO_DEEP) from None
    except ValueError as exc:  # JSONDecodeError is a ValueError, and so is _no_constant's
        raise BadRequest(f"request body is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise BadRequest(f"request body must be a JSON object, not {_JSON_TYPES.get(type(value), 'that')}")
    # Each check runs at C speed, and only on a body that could fail it: most bodies need neither.
    if raw.count(b"[") + raw.count(b"{") > MAX_DEPTH and nesting(raw) > MAX_DEPTH:
        raise BadRequest(TOO_DEEP)
    if _SURROGATE_ESCAPE.search(raw) and not _is_text(value):
        raise BadRequest(lone_surrogate(value) or "request body holds a lone UTF-16 surrogate")
    return value


def nesting(raw: bytes) -> int:
    """How deep the valid JSON text ``raw`` nests: the highest running count of its brackets outside strings."""
    brackets = _STRING.sub(b"", raw).translate(None, _NOT_BRACKETS)
    return max(itertools.accumulate(map(_STEP.__getitem__, brackets)), default=0)


def _is_text(value: dict[str, Any]) -> bool:
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def lone_surrogate(value: dict[str, Any]) -> str | None:
    """What to say of the first lone surrogate in ``value``'s names and strings, naming where it is
    (``params.prompt``, ``callback_urls.on_result_url``...); None if there is none. Iterative: no recursion."""
    pending: list[tuple[dict[str, Any] | list[Any], str]] = [(value, "")]
    while pending:
        container, where = pending.pop()
        items = container.items() if isinstance(container, dict) else enumerate(container)
        for key, child in items:
            path = f"{where}[{key}]" if isinstance(key, int) else f"{where}.{_shown(key)}" if where else _shown(key)
            if isinstance(key, str) and _SURROGATE.search(key):
                return _surrogate_detail(key, f"the name {path}")
            if isinstance(child, str) and _SURROGATE.search(child):
                return _surrogate_detail(child, f"the value of {path}")
            if isinstance(child, dict | list):
                pending.append((child, path))
    return None


def _shown(text: str) -> str:
    # A lone surrogate cannot be written as UTF-8, in a problem or a log line: show its escape instead.
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _surrogate_detail(text: str, where: str) -> str:
    found = _SURROGATE.search(text)
    return (
        f"request body: {where} holds a lone UTF-16 surrogate ({_shown(found.group() if found else text)}), "
        "which is not Unicode text; send a character outside the BMP as a surrogate pair or as UTF-8"
    )


async def read_json_object(request: Request, max_bytes: int) -> dict[str, Any]:
    """Read and parse the body as a JSON object; BadRequest (400) or PayloadTooLarge (413) otherwise."""
    return parse_object(await read_body(request, max_bytes))
