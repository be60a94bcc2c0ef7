"""Request bodies that are valid JSON but not acceptable: lone surrogates, deep nesting; and problems that echo them."""

from __future__ import annotations

import json
from typing import Any

import pytest

from api.body import MAX_DEPTH, lone_surrogate, nesting, parse_object
from api.problems import ProblemResponse
from dispatcher.errors import BadRequest


def objects(levels: int) -> bytes:
    return b'{"a": ' * (levels - 1) + b"{}" + b"}" * (levels - 1)


def arrays(levels: int) -> bytes:
    """A body of ``levels`` levels: the object, then arrays inside it."""
    return b'{"a": ' + b"[" * (levels - 1) + b"]" * (levels - 1) + b"}"


@pytest.mark.parametrize(
    ("raw", "where"),
    [
        (rb'{"params": {"prompt": "\ud800"}}', "the value of params.prompt"),
        (rb'{"params": {"prompt": "a \uDBFF b"}}', "the value of params.prompt"),
        (rb'{"params": {"prompt": "\udc00\ud800"}}', "the value of params.prompt"),  # a pair in the wrong order
        (rb'{"params": {"\ud800": 1}}', "the name params.\\ud800"),
        (rb'{"\udfff": 1}', "the name \\udfff"),
        (
            rb'{"callback_urls": {"on_result_url": "http://\ud800.example/"}}',
            "the value of callback_urls.on_result_url",
        ),
        (rb'{"params": {"6::text": ["ok", "\ud800"]}}', "the value of params.6::text[1]"),
        (rb'{"6": {"inputs": {"text": "\ud800"}}}', "the value of 6.inputs.text"),
        (rb'{"id": "\ud800"}', "the value of id"),
    ],
)
def test_a_lone_surrogate_is_refused_naming_where(raw: bytes, where: str) -> None:
    with pytest.raises(BadRequest) as caught:
        parse_object(raw)
    detail = str(caught.value)
    assert detail.startswith(f"request body: {where} holds a lone UTF-16 surrogate")
    detail.encode("utf-8")  # the message itself is text: it shows the escape, not the surrogate


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (rb'{"p": "\ud83d\ude00"}', {"p": "\U0001f600"}),  # a surrogate pair is one character
        (b'{"p": "\xf0\x9f\x98\x80"}', {"p": "\U0001f600"}),  # the same character as UTF-8
        (rb'{"p": "\\ud800"}', {"p": "\\ud800"}),  # an escaped backslash: six characters of text
        (rb'{"p": "\u00e9\uFFFD"}', {"p": "\u00e9\ufffd"}),
    ],
)
def test_text_that_only_looks_like_a_surrogate_is_fine(raw: bytes, expected: dict[str, Any]) -> None:
    assert parse_object(raw) == expected


@pytest.mark.parametrize("body", [objects, arrays])
@pytest.mark.parametrize("levels", [MAX_DEPTH + 1, 100, 1000, 100_000])
def test_nesting_deeper_than_the_limit_is_refused(body: Any, levels: int) -> None:
    with pytest.raises(BadRequest, match="nested too deeply"):
        parse_object(body(levels))


@pytest.mark.parametrize("body", [objects, arrays])
def test_nesting_up_to_the_limit_is_fine(body: Any) -> None:
    assert isinstance(parse_object(body(MAX_DEPTH)), dict)


def test_many_brackets_in_strings_or_side_by_side_are_no_depth() -> None:
    prompt = "((masterpiece)), [cat:dog:0.5], " * 50
    assert parse_object(json.dumps({"params": {"prompt": prompt}}).encode())["params"]["prompt"] == prompt
    assert len(parse_object(json.dumps({"a": [[1]] * 500}).encode())["a"]) == 500


@pytest.mark.parametrize(
    ("raw", "depth"),
    [
        (b"{}", 1),
        (b'{"a": [1, {"b": []}], "c": {}}', 4),
        (b'{"a": "[[[{{{"}', 1),  # brackets in strings are text
        (rb'{"a": "\"[[[", "b": [["\\"]]}', 3),  # escaped quotes and backslashes end no string early
        (b'{"a": [[]], "b": [[]], "c": [[]]}', 3),  # side by side is no deeper
        (arrays(1000), 1000),
    ],
)
def test_nesting(raw: bytes, depth: int) -> None:
    assert nesting(raw) == depth


@pytest.mark.parametrize(
    ("value", "where"),
    [
        ({"a": [{"b": "x\ud800"}]}, "the value of a[0].b"),
        ({"a": {"\udc00": None}}, "the name a.\\udc00"),
        ({"a": [[1, 2], ["\udfff"]]}, "the value of a[1][0]"),
    ],
)
def test_lone_surrogate_names_where(value: dict[str, Any], where: str) -> None:
    detail = lone_surrogate(value)
    assert detail is not None and detail.startswith(f"request body: {where} holds")


def test_no_lone_surrogate() -> None:
    assert lone_surrogate({"a": ["\U0001f600", {"\u00e9": "\ufffd"}]}) is None


@pytest.mark.parametrize(
    "content",
    [
        {"detail": "\ud800: unknown parameter", "errors": [{"param": "\ud800", "detail": "x"}]},
        {"detail": "run 'a\udfffb' does not exist"},
    ],
)
def test_a_problem_echoing_a_surrogate_still_renders(content: dict[str, Any]) -> None:
    rendered = json.loads(bytes(ProblemResponse(content, status_code=422).body))
    assert "\ufffd" in rendered["detail"]


def test_a_problem_renders_as_json_response_does() -> None:
    assert ProblemResponse({"detail": "é ✓", "status": 400}).body == '{"detail":"é ✓","status":400}'.encode()
