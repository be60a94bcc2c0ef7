"""Which files a finished prompt produced: pure mapping of a ComfyUI history entry.

Files are read from the history of the run's own ``prompt_id`` only (never by
scanning ComfyUI's folders), so a run can never pick up another run's file;
``subfolder`` and ``type`` travel with each file to ``/view`` unchanged.
"""

from __future__ import annotations

import mimetypes
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

# Keys of a node's UI output that hold file references (SaveImage: images, video nodes: gifs, ...).
FILE_KINDS = ("images", "gifs", "videos", "audio", "animated", "files", "3d")


@dataclass(frozen=True)
class OutputFile:
    node: str
    filename: str
    subfolder: str
    type: str  # output | temp | input
    kind: str


def files_from_history(entry: dict[str, Any]) -> list[OutputFile]:
    """Every file reference in a history entry's ``outputs`` (see :func:`files_from_outputs`)."""
    outputs = entry.get("outputs")
    return files_from_outputs(outputs if isinstance(outputs, dict) else {})


def files_from_outputs(outputs: dict[str, Any]) -> list[OutputFile]:
    """Every file reference in the UI outputs of a prompt's nodes (node id -> UI dict), in node order then
    file order: what ``/history`` lists under ``outputs``, or the ``executed`` events carried.

    ``type: temp`` files (previews) are kept only when the prompt saved no
    ``output`` file at all, so a preview-only workflow still returns its images.
    """
    found: list[OutputFile] = []
    for node, ui in outputs.items():
        if not isinstance(ui, dict):
            continue
        for kind in FILE_KINDS:
            for item in ui.get(kind) or []:
                if isinstance(item, dict) and item.get("filename"):
                    found.append(
                        OutputFile(
                            node=str(node),
                            filename=str(item["filename"]),
                            subfolder=str(item.get("subfolder") or ""),
                            type=str(item.get("type") or "output"),
                            kind=kind,
                        )
                    )
    saved = [f for f in found if f.type == "output"]
    return saved if saved else found


def unique_names(files: Sequence[OutputFile]) -> list[str]:
    """A name per file, unique within the run: the ComfyUI file name, node-prefixed on a clash."""
    names: list[str] = []
    seen: set[str] = set()
    for f in files:
        name = f.filename
        if name in seen:
            name = f"{f.node}-{f.subfolder.replace('/', '-')}-{f.filename}".replace("--", "-")
        counter = 1
        base = name
        while name in seen:
            counter += 1
            name = f"{counter}-{base}"
        seen.add(name)
        names.append(name)
    return names


def content_type(filename: str) -> str:
    guessed, _ = mimetypes.guess_type(filename)
    return guessed or "application/octet-stream"
