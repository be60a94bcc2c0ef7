from __future__ import annotations

import json
from pathlib import Path

import pytest

from dispatcher.outputs import OutputFile, content_type, files_from_history, unique_names

TRANSCRIPTS = Path(__file__).resolve().parents[1] / "fixtures" / "transcripts"


def _history(name: str) -> dict[str, object]:
    data = json.loads((TRANSCRIPTS / name).read_text())
    (entry,) = data["history"].values()
    return entry  # type: ignore[no-any-return]


def test_saved_files_of_the_recorded_invert_run() -> None:
    files = files_from_history(_history("success_invert.json"))
    assert files == [
        OutputFile("3", "rec_00001_.png", "", "output", "images"),
        OutputFile("3", "rec_00002_.png", "", "output", "images"),
    ]


def test_failed_prompt_has_no_files() -> None:
    assert files_from_history(_history("runtime_error.json")) == []


def test_previews_count_only_when_nothing_was_saved() -> None:
    entry = {
        "outputs": {"4": {"images": [{"filename": "ComfyUI_temp_abcde_00001_.png", "subfolder": "", "type": "temp"}]}}
    }
    assert files_from_history(entry) == [OutputFile("4", "ComfyUI_temp_abcde_00001_.png", "", "temp", "images")]


@pytest.mark.parametrize(
    ("ui", "expected"),
    [
        ({"images": [{"filename": "a.png", "subfolder": "x/y", "type": "output"}]}, [("a.png", "x/y", "images")]),
        ({"gifs": [{"filename": "v.mp4", "subfolder": "", "type": "output"}]}, [("v.mp4", "", "gifs")]),
        ({"audio": [{"filename": "s.flac", "subfolder": "au", "type": "output"}]}, [("s.flac", "au", "audio")]),
        ({"text": ["hello"]}, []),
        ({"images": [{"subfolder": ""}]}, []),
    ],
)
def test_every_file_kind_keeps_its_subfolder(ui: dict[str, object], expected: list[tuple[str, str, str]]) -> None:
    files = files_from_history({"outputs": {"9": ui}})
    assert [(f.filename, f.subfolder, f.kind) for f in files] == expected


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
    ("name", "ctype"),
    [
        ("a.png", "image/png"),
        ("a.webp", "image/webp"),
        ("a.mp4", "video/mp4"),
        ("a.unknownext", "application/octet-stream"),
    ],
)
def test_content_type(name: str, ctype: str) -> None:
    assert content_type(name) == ctype
