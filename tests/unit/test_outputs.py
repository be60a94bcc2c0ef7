from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from dispatcher.outputs import (
    INLINE_TEXT_CHARS,
    TEXT_CONTENT_TYPE,
    OutputFile,
    content_type,
    files_from_history,
    files_from_outputs,
    inline_text,
    kind_named,
    kind_of,
    truncated,
    unique_names,
)
from dispatcher.runs import Output

TRANSCRIPTS = Path(__file__).resolve().parents[1] / "fixtures" / "transcripts"


def _history(name: str) -> dict[str, object]:
    data = json.loads((TRANSCRIPTS / name).read_text())
    (entry,) = data["history"].values()
    return entry  # type: ignore[no-any-return]


def _ref(name: str, subfolder: str = "", kind: str = "output") -> dict[str, str]:
    return {"filename": name, "subfolder": subfolder, "type": kind}


def test_saved_files_of_the_recorded_invert_run() -> None:
    files = files_from_history(_history("success_invert.json"))
    assert files == [
        OutputFile("3", "rec_00001_.png", "", "output", "images"),
        OutputFile("3", "rec_00002_.png", "", "output", "images"),
    ]


def test_failed_prompt_has_no_files() -> None:
    assert files_from_history(_history("runtime_error.json")) == []


def test_previews_count_only_when_nothing_was_saved() -> None:
    entry = {"outputs": {"4": {"images": [_ref("ComfyUI_temp_abcde_00001_.png", kind="temp")]}}}
    assert files_from_history(entry) == [OutputFile("4", "ComfyUI_temp_abcde_00001_.png", "", "temp", "images")]


def test_a_text_is_no_saved_file_so_previews_stay() -> None:
    outputs = {"4": {"images": [_ref("ComfyUI_temp_x_00001_.png", kind="temp")]}, "5": {"text": ["hi"]}}
    assert [(f.filename, f.kind) for f in files_from_outputs(outputs)] == [
        ("ComfyUI_temp_x_00001_.png", "image"),
        ("text-5.txt", "text"),
    ]


def test_saved_files_drop_previews_but_keep_texts() -> None:
    outputs = {
        "4": {"images": [_ref("ComfyUI_temp_x_00001_.png", kind="temp")]},
        "5": {"text": ["hi"]},
        "9": {"images": [_ref("a_00001_.png")]},
    }
    assert [f.filename for f in files_from_outputs(outputs)] == ["text-5.txt", "a_00001_.png"]


# Each UI output shape ComfyUI 0.3.64 (and VideoHelperSuite) sends -> (filename, ui key, kind, content type, text).
SHAPES: list[tuple[str, dict[str, Any], list[tuple[str, str, str, str, str | None]]]] = [
    ("SaveImage", {"images": [_ref("a_00001_.png", "x/y")]}, [("a_00001_.png", "images", "image", "image/png", None)]),
    (
        "SaveAnimatedWEBP",
        {"images": [_ref("w_00001_.webp")], "animated": [True]},
        [("w_00001_.webp", "images", "image", "image/webp", None)],
    ),
    (
        "SaveAnimatedPNG",
        {"images": [_ref("p_00001_.png")], "animated": [True]},
        [("p_00001_.png", "images", "image", "image/png", None)],
    ),
    (
        "SaveVideo: an mp4 under images, animated",
        {"images": [_ref("video_00001_.mp4", "video")], "animated": [True]},
        [("video_00001_.mp4", "images", "video", "video/mp4", None)],
    ),
    (
        "SaveWEBM",
        {"images": [_ref("ComfyUI_00001_.webm")], "animated": [True]},
        [("ComfyUI_00001_.webm", "images", "video", "video/webm", None)],
    ),
    (
        "VHS_VideoCombine image/gif",
        {"gifs": [{**_ref("AnimateDiff_00001.gif"), "format": "image/gif", "frame_rate": 8.0, "workflow": "x.png"}]},
        [("AnimateDiff_00001.gif", "gifs", "image", "image/gif", None)],
    ),
    (
        "VHS_VideoCombine video/h264-mp4",
        {"gifs": [{**_ref("AnimateDiff_00001.mp4"), "format": "video/h264-mp4", "frame_rate": 8.0}]},
        [("AnimateDiff_00001.mp4", "gifs", "video", "video/mp4", None)],
    ),
    (
        "SaveAudio",
        {"audio": [_ref("a_00001_.flac", "audio")]},
        [("a_00001_.flac", "audio", "audio", "audio/flac", None)],
    ),
    ("SaveAudioMP3", {"audio": [_ref("a_00001_.mp3")]}, [("a_00001_.mp3", "audio", "audio", "audio/mpeg", None)]),
    (
        "SaveAudioOpus",
        {"audio": [_ref("a_00001_.opus")]},
        [("a_00001_.opus", "audio", "audio", "audio/ogg; codecs=opus", None)],
    ),
    ("SaveGLB", {"3d": [_ref("m_00001_.glb", "mesh")]}, [("m_00001_.glb", "3d", "file", "model/gltf-binary", None)]),
    ("PreviewAny", {"text": ["hello"]}, [("text-9.txt", "text", "text", TEXT_CONTENT_TYPE, "hello")]),
    (
        "several texts",
        {"text": ["a", "b"]},
        [
            ("text-9-1.txt", "text", "text", TEXT_CONTENT_TYPE, "a"),
            ("text-9-2.txt", "text", "text", TEXT_CONTENT_TYPE, "b"),
        ],
    ),
    ("a bare string under text", {"text": "plain"}, [("text-9.txt", "text", "text", TEXT_CONTENT_TYPE, "plain")]),
    (
        "other values under text, as JSON",
        {"text": [1, None, {"x": 1}]},
        [
            ("text-9-1.txt", "text", "text", TEXT_CONTENT_TYPE, "1"),
            ("text-9-2.txt", "text", "text", TEXT_CONTENT_TYPE, '{"x": 1}'),
        ],
    ),
    ("a file without a name", {"images": [{"subfolder": ""}]}, []),
    ("animated flags alone", {"animated": [True]}, []),
    ("Preview3D's result paths", {"result": ["3d/x.glb", None, None]}, []),
    (
        "an unknown extension",
        {"images": [_ref("x.unknownext")]},
        [("x.unknownext", "images", "file", "application/octet-stream", None)],
    ),
]


@pytest.mark.parametrize(("ui", "expected"), [(ui, expected) for _, ui, expected in SHAPES], ids=[s[0] for s in SHAPES])
def test_each_ui_output_shape_maps_to_its_kind_and_content_type(
    ui: dict[str, Any], expected: list[tuple[str, str, str, str, str | None]]
) -> None:
    files = files_from_history({"outputs": {"9": ui}})
    assert [(f.filename, f.ui_key, f.kind, f.content_type, f.text) for f in files] == expected
    assert all(f.node == "9" for f in files)


def test_files_keep_their_subfolder_and_type() -> None:
    (video,) = files_from_outputs({"3": {"images": [_ref("v_00001_.mp4", "video")], "animated": [True]}})
    assert (video.subfolder, video.type) == ("video", "output")


@pytest.mark.parametrize(
    ("files", "names"),
    [
        ([("1", "a.png", "")], ["a.png"]),
        ([("1", "a.png", ""), ("2", "b.png", "")], ["a.png", "b.png"]),
        ([("1", "a.png", "x"), ("2", "a.png", "y")], ["a.png", "2-y-a.png"]),
        ([("1", "a.png", ""), ("1", "a.png", ""), ("1", "a.png", "")], ["a.png", "1-a.png", "2-1-a.png"]),
    ],
)
def test_names_are_unique_within_a_run(files: list[tuple[str, str, str]], names: list[str]) -> None:
    refs = [OutputFile(node, name, sub, "output", "images") for node, name, sub in files]
    result = unique_names(refs)
    assert result == names
    assert len(set(result)) == len(result)


@pytest.mark.parametrize(
    ("name", "ctype", "kind"),
    [
        ("a.png", "image/png", "image"),
        ("A.PNG", "image/png", "image"),
        ("a.webp", "image/webp", "image"),
        ("a.gif", "image/gif", "image"),
        ("a.svg", "image/svg+xml", "image"),
        ("a.mp4", "video/mp4", "video"),
        ("a.webm", "video/webm", "video"),
        ("a.flac", "audio/flac", "audio"),
        ("a.mp3", "audio/mpeg", "audio"),
        ("a.opus", "audio/ogg; codecs=opus", "audio"),
        ("a.wav", "audio/wav", "audio"),
        ("a.glb", "model/gltf-binary", "file"),
        ("a.txt", TEXT_CONTENT_TYPE, "text"),
        ("a.json", "application/json", "file"),
        ("a.unknownext", "application/octet-stream", "file"),
    ],
)
def test_content_type_and_kind(name: str, ctype: str, kind: str) -> None:
    assert content_type(name) == ctype
    assert kind_of(ctype) == kind


@pytest.mark.parametrize(
    ("media_type", "kind"),
    [("IMAGE/PNG", "image"), ("text/plain", "text"), ("text/html", "file"), ("", "file"), ("video", "video")],
)
def test_kind_of_any_media_type(media_type: str, kind: str) -> None:
    assert kind_of(media_type) == kind


def test_kind_named_falls_back_to_the_content_type() -> None:
    assert kind_named("audio", "image/png") == "audio"
    assert kind_named("", "video/mp4") == "video"
    assert kind_named("nonsense", "model/gltf-binary") == "file"


def test_inline_text_is_cut_at_its_limit() -> None:
    assert inline_text(None) is None
    assert inline_text("x" * (INLINE_TEXT_CHARS + 5)) == "x" * INLINE_TEXT_CHARS


def test_a_record_written_before_kinds_gets_its_kind_from_its_content_type() -> None:
    old = {"node": "3", "filename": "v.mp4", "content_type": "video/mp4", "size": 5, "key": "r/1/v.mp4"}
    assert Output.from_dict(old).kind == "video"
    assert Output.from_dict({**old, "kind": "image"}).kind == "image"


@pytest.mark.parametrize(
    ("items", "texts"),
    [
        (["a", 3, None, "b"], ["a", "3", "b"]),  # a custom node's number: as PreviewAny would show it
        ([["x", 1], {"k": True}], ['["x", 1]', '{"k": true}']),
        (["x\udc80y"], ["x?y"]),  # a lone surrogate has no UTF-8 (nor a place in Redis' cjson): replaced
        ("bare", ["bare"]),
    ],
)
def test_every_text_item_is_kept_as_storable_text(items: object, texts: list[str]) -> None:
    found = files_from_outputs({"9": {"text": items}})
    assert [f.text for f in found] == texts
    assert all(f.text is not None and f.text.encode() for f in found)


@pytest.mark.parametrize(
    ("text", "size", "cut"),
    [(None, 10, False), ("abc", 3, False), ("a" * INLINE_TEXT_CHARS, INLINE_TEXT_CHARS, False),
     ("a" * INLINE_TEXT_CHARS, INLINE_TEXT_CHARS + 1, True)],
)  # fmt: skip
def test_truncated_tells_a_cut_inline_text(text: str | None, size: int, cut: bool) -> None:
    assert truncated(text, size) is cut
