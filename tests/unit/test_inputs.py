"""Input image values: parsing, sniffing, size checks, canonical forms and graph marks (pure, no I/O)."""

from __future__ import annotations

import base64
import hashlib
import io
from typing import Any

import pytest
from PIL import Image

from dispatcher.binding import bind, image_values
from dispatcher.errors import ParameterError
from dispatcher.inputs import (
    MARK,
    DataImage,
    UploadImage,
    UrlImage,
    base64_size,
    canonical_image,
    check_image,
    mark_image_input,
    parse_bound,
    parse_image,
    sniff,
    take_marks,
    upload_id,
)
from dispatcher.settings import PROJECT_ROOT, load_settings
from dispatcher.uploads import clean_name, run_body_limit
from dispatcher.workflows import Registry


def encoded(fmt: str, size: tuple[int, int] = (4, 4)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 10, 10)).save(buffer, format=fmt)
    return buffer.getvalue()


PNG = encoded("PNG")
B64 = base64.b64encode(PNG).decode()
ID = hashlib.sha256(PNG).hexdigest()[:32]
REGISTRY = Registry.load(PROJECT_ROOT / "workflows")


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (PNG, "image/png"),
        (encoded("JPEG"), "image/jpeg"),
        (encoded("WEBP"), "image/webp"),
        (encoded("GIF"), "image/gif"),
        (b"GIF87a" + b"\0" * 10, "image/gif"),
        (encoded("BMP"), None),
        (b"<html>", None),
        (b"RIFF\0\0\0\0WAVE", None),
        (b"", None),
    ],
)
def test_sniff_knows_four_formats_by_their_magic_bytes(data: bytes, expected: str | None) -> None:
    assert sniff(data) == expected


@pytest.mark.parametrize(
    ("data", "max_bytes", "detail"),
    [
        (b"", None, "the image is empty"),
        (b"hello", None, "is not a PNG, JPEG, WebP or GIF image"),
        (PNG, len(PNG) - 1, f"the image is {len(PNG)} bytes, more than the limit of {len(PNG) - 1}"),
    ],
)
def test_check_image_refusals_name_the_parameter(data: bytes, max_bytes: int | None, detail: str) -> None:
    with pytest.raises(ParameterError) as caught:
        check_image("image", data, max_bytes=max_bytes)
    assert caught.value.param == "image" and caught.value.detail == detail


def test_check_image_accepts_exactly_the_limit() -> None:
    assert check_image("image", PNG, max_bytes=len(PNG)) == "image/png"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("https://example.com/a.png", UrlImage("https://example.com/a.png")),
        ("  HTTP://Example.com:8080/a.png?x=1  ", UrlImage("HTTP://Example.com:8080/a.png?x=1")),
        ("upload:" + ID, UploadImage(ID)),
        (ID, UploadImage(ID)),
        (B64, DataImage(PNG, "image/png")),
        ("\n".join(B64[i : i + 76] for i in range(0, len(B64), 76)), DataImage(PNG, "image/png")),  # MIME lines
        ("data:image/png;base64," + B64, DataImage(PNG, "image/png")),
        ("DATA:image/jpeg;name=a.png;base64," + B64, DataImage(PNG, "image/png")),  # the bytes decide
        ("data:;base64," + B64, DataImage(PNG, "image/png")),
        ("data:application/octet-stream;base64," + B64, DataImage(PNG, "image/png")),
    ],
)
def test_parse_image_tells_the_kinds_apart(value: str, expected: Any) -> None:
    assert parse_image("image", value, max_bytes=1024 * 1024) == expected


@pytest.mark.parametrize(
    ("value", "detail"),
    [
        ("", "must be a non-empty string"),
        ("   ", "must be a non-empty string"),
        (3, "must be a non-empty string"),
        (None, "must be a non-empty string"),
        (["https://example.com/a.png"], "must be a non-empty string"),
        ("example.png", "is not an http(s) URL, base64 data"),
        ("../input/secret.png [output]", "is not an http(s) URL, base64 data"),
        ("upload:xyz", "is not an upload id"),
        ("upload:" + ID.upper(), "is not an upload id"),
        ("https://", "the URL has no host"),
        ("https://user:pw@example.com/a.png", "credentials"),
        ("http://example.com:99999/a.png", "is not a valid URL"),
        ("https://example.com/" + "a" * 3000, "longer than 2048"),
        ("data:image/png," + B64, "must be base64-encoded"),
        ("data:text/html;base64," + B64, "of type 'text/html' is not an image"),
        ("data:image/png;base64", "is not a valid data: URI"),
        ("data:image/png;base64,", "the image is empty"),
        (base64.b64encode(b"hello world").decode(), "is not a PNG, JPEG, WebP or GIF image"),
        (B64[:-3], "is not valid base64"),
        (B64 + "@@", "is not an http(s) URL, base64 data"),
    ],
)
def test_parse_image_refusals_name_the_parameter(value: Any, detail: str) -> None:
    with pytest.raises(ParameterError) as caught:
        parse_image("image", value, max_bytes=1024 * 1024)
    assert caught.value.param == "image" and detail in caught.value.detail


@pytest.mark.parametrize("value", [B64, "data:image/png;base64," + B64])
def test_inline_images_over_the_limit_are_refused(value: str) -> None:
    with pytest.raises(ParameterError, match="more than the limit of 64 bytes"):
        parse_image("image", value, max_bytes=64)


@pytest.mark.parametrize("n", [0, 1, 2, 3, 4, 5, 6, 1000, 5 * 1024 * 1024])
def test_base64_size_is_what_b64encode_gives(n: int) -> None:
    assert base64_size(n) == len(base64.b64encode(b"\0" * n))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("https://example.com/a.png", "https://example.com/a.png"),
        (B64, "upload:" + ID),
        ("data:image/png;base64," + B64, "upload:" + ID),
        (ID, "upload:" + ID),
        ("upload:" + ID, "upload:" + ID),
    ],
)
def test_canonical_image_keeps_urls_and_names_inline_data_by_its_upload_id(value: str, expected: str) -> None:
    assert canonical_image("image", value) == expected
    assert upload_id(PNG) == ID


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("upload:" + ID, UploadImage(ID)),
        ("https://example.com/a.png", UrlImage("https://example.com/a.png")),
        ("example.png", None),
        ("upload:nope", None),
        (7, None),
    ],
)
def test_parse_bound_reads_only_canonical_values(value: Any, expected: Any) -> None:
    assert parse_bound(value) == expected


def test_marks_go_into_meta_and_come_out_once() -> None:
    node: dict[str, Any] = {"class_type": "LoadImage", "inputs": {"image": "x"}, "_meta": {"title": "Load"}}
    mark_image_input(node, "image", "picture")
    assert node["_meta"] == {"title": "Load", MARK: {"image": "picture"}}
    assert take_marks(node) == {"image": "picture"}
    assert node["_meta"] == {"title": "Load"} and take_marks(node) == {}
    bare: dict[str, Any] = {"class_type": "LoadImage", "inputs": {}}
    mark_image_input(bare, "image", "picture")
    assert take_marks(bare) == {"image": "picture"} and "_meta" not in bare


@pytest.mark.parametrize(
    "body",
    [
        {"params": {"prompt": "a cat", "image": B64}},
        {"input": {"prompt": "a cat", "image": "data:image/png;base64," + B64}},
        {"params": {"prompt": "a cat", "10::image": B64}},
        {"prompt": "a cat", "10": {"inputs": {"image": B64}}},
    ],
    ids=["named", "flowai", "comflowy", "flask-advanced"],
)
def test_every_body_form_binds_an_inline_image_as_its_upload_id_and_marks_it(body: dict[str, Any]) -> None:
    workflow = REGISTRY.get("img2img")
    assert [name for name, _ in image_values(workflow, body)] == ["image"]
    bound = bind(workflow, body, run_id="r1")
    node = bound.graph["10"]
    assert node["inputs"]["image"] == "upload:" + ID and bound.params["image"] == "upload:" + ID
    assert node["_meta"][MARK] == {"image": "image"}
    assert B64 not in str(bound.graph)  # no base64 in the graph kept in Redis


def test_image_values_skips_nulls_and_other_params() -> None:
    assert image_values(REGISTRY.get("img2img"), {"params": {"prompt": "x", "image": None}}) == []
    assert image_values(REGISTRY.get("invert"), {"params": {"width": 8}}) == []


def test_run_body_limit_makes_room_only_for_workflows_taking_images() -> None:
    settings = load_settings({}, max_body_bytes=4096, input_max_bytes=3000)
    one_image = run_body_limit(settings, REGISTRY, "img2img")
    assert one_image >= 4096 + base64_size(3000) * 1.1
    assert run_body_limit(settings, REGISTRY, "invert") == 4096
    assert run_body_limit(settings, REGISTRY, "no-such-workflow") == 4096
    assert run_body_limit(settings, REGISTRY, None) == one_image  # Comflowy: the workflow is named in the body


@pytest.mark.parametrize(
    ("name", "expected"),
    [("cat.png", "cat.png"), ("C:\\Users\\me\\cat.png", "cat.png"), ("../../x.png", "x.png"), ("", "image.png"),
     ('a"b\r\n.png', "a_b__.png"), ("x" * 300, "x" * 255)],
)  # fmt: skip
def test_clean_name(name: str, expected: str) -> None:
    assert clean_name(name, "image/png") == expected
