"""Which outputs a finished prompt produced: pure mapping of a ComfyUI history entry to files and texts.

Files are read from the history of the run's own ``prompt_id`` only (never by scanning ComfyUI's folders), so
a run can never pick up another run's file; ``subfolder`` and ``type`` travel with each file to ``/view``
unchanged. Texts (a node whose UI output is ``{"text": ["..."]}``, such as ``PreviewAny``) have no file on
ComfyUI: the worker stores the string itself, as a ``text/plain; charset=utf-8`` output.

An output's ``kind`` (image, video, audio, text, file) follows its content type, never only the UI key that
listed it: ComfyUI 0.3.64's ``SaveVideo`` reports its ``.mp4`` under ``images`` (with ``animated: [true]``),
VideoHelperSuite's ``VHS_VideoCombine`` reports a GIF under ``gifs``.
"""

from __future__ import annotations

import json
import mimetypes
import posixpath
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

# Keys of a node's UI output that list file references ({"filename", "subfolder", "type"}): SaveImage,
# SaveAnimatedWEBP/PNG, SaveVideo, SaveWEBM: images; VHS_VideoCombine: gifs; SaveAudio*: audio; SaveGLB: 3d.
FILE_KEYS = ("images", "gifs", "videos", "audio", "files", "3d")
TEXT_KEY = "text"  # PreviewAny, and any node whose UI output is a list of strings under "text"

Kind = Literal["image", "video", "audio", "text", "file"]
KINDS: tuple[Kind, ...] = ("image", "video", "audio", "text", "file")

_KINDS_BY_NAME: dict[str, Kind] = {kind: kind for kind in KINDS}
_MEDIA_KINDS: dict[str, Kind] = {"image": "image", "video": "video", "audio": "audio"}
TEXT_CONTENT_TYPE = "text/plain; charset=utf-8"
INLINE_TEXT_CHARS = 65_536
"""How much of a text output a run record carries inline; the stored file always has the whole text."""

# What ComfyUI's save nodes write, stated here rather than left to the host's mime.types (which differs from
# one machine to the next and lacks several of these).
_CONTENT_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".webp": "image/webp",
    ".gif": "image/gif",
    ".svg": "image/svg+xml",
    ".mp4": "video/mp4",
    ".webm": "video/webm",
    ".mov": "video/quicktime",
    ".mkv": "video/x-matroska",
    ".flac": "audio/flac",
    ".mp3": "audio/mpeg",
    ".opus": "audio/ogg; codecs=opus",  # Ogg Opus (RFC 7845), what SaveAudioOpus writes
    ".ogg": "audio/ogg",
    ".wav": "audio/wav",
    ".m4a": "audio/mp4",
    ".glb": "model/gltf-binary",
    ".gltf": "model/gltf+json",
    ".obj": "model/obj",
    ".stl": "model/stl",
    ".usdz": "model/vnd.usdz+zip",
    ".txt": TEXT_CONTENT_TYPE,
    ".json": "application/json",
}


@dataclass(frozen=True)
class OutputFile:
    """One output of a prompt: a file on ComfyUI (fetched from ``/view``), or a text (``text`` set, no file)."""

    node: str
    filename: str
    subfolder: str
    type: str  # output | temp | input
    ui_key: str  # the key of the node's UI output that listed it: images, gifs, audio, 3d, text...
    text: str | None = None

    @property
    def content_type(self) -> str:
        return content_type(self.filename)

    @property
    def kind(self) -> Kind:
        return kind_of(self.content_type)


def files_from_history(entry: dict[str, Any]) -> list[OutputFile]:
    """Every output in a history entry's ``outputs`` (see :func:`files_from_outputs`)."""
    outputs = entry.get("outputs")
    return files_from_outputs(outputs if isinstance(outputs, dict) else {})


def files_from_outputs(outputs: dict[str, Any]) -> list[OutputFile]:
    """Every file reference and text in the UI outputs of a prompt's nodes (node id -> UI dict), in node order
    then in the order each node listed them: what ``/history`` lists under ``outputs``, or ``executed`` carried.

    ``type: temp`` files (previews) are kept only when the prompt saved no ``output`` file at all, so a
    preview-only workflow still returns its images; texts are always kept and count as no saved file.
    """
    found: list[OutputFile] = []
    for node, ui in outputs.items():
        if not isinstance(ui, dict):
            continue
        for key, items in ui.items():
            if key == TEXT_KEY:
                found.extend(_texts(str(node), items))
            elif key in FILE_KEYS and isinstance(items, list):
                found.extend(_files(str(node), key, items))
    saved = any(f.type == "output" for f in found if f.text is None)
    return [f for f in found if f.text is not None or f.type == "output" or not saved]


def _files(node: str, key: str, items: list[Any]) -> list[OutputFile]:
    return [
        OutputFile(
            node=node,
            filename=str(item["filename"]),
            subfolder=str(item.get("subfolder") or ""),
            type=str(item.get("type") or "output"),
            ui_key=key,
        )
        for item in items
        if isinstance(item, dict) and item.get("filename")
    ]


def _texts(node: str, items: Any) -> list[OutputFile]:
    # ComfyUI sends a tuple (a JSON list); a node that put a bare string there is taken at its word too.
    if isinstance(items, str):
        texts = [clean_text(items)]
    elif isinstance(items, list):
        texts = [clean_text(t) for t in items if t is not None]
    else:
        texts = []
    return [
        OutputFile(node, text_filename(node, i, len(texts)), "", "output", TEXT_KEY, text)
        for i, text in enumerate(texts)
    ]


def clean_text(item: Any) -> str:
    """A text output as storable text: a custom node's number or list as JSON (what PreviewAny shows for them),
    and a lone surrogate (no UTF-8 for it; Redis' cjson refuses it too) replaced."""
    text: str
    if isinstance(item, str):
        text = item
    else:
        try:
            text = json.dumps(item, default=str)
        except (TypeError, ValueError):
            text = str(item)
    return text.encode("utf-8", "replace").decode("utf-8")


def truncated(text: str | None, size: int) -> bool:
    """Whether an output's inline ``text`` is only the start of its stored ``size`` bytes."""
    return text is not None and len(text) == INLINE_TEXT_CHARS and len(text.encode()) < size


def text_filename(node: str, index: int, count: int) -> str:
    """The name a text output is stored under: ``text-<node>.txt``, numbered from 1 when the node gave several."""
    return f"text-{node}.txt" if count == 1 else f"text-{node}-{index + 1}.txt"


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
    """The media type of a file by its extension; ``application/octet-stream`` when unknown."""
    extension = posixpath.splitext(filename.lower())[1]
    known = _CONTENT_TYPES.get(extension)
    if known is not None:
        return known
    guessed, _ = mimetypes.guess_type(filename)
    return guessed or "application/octet-stream"


def kind_of(media_type: str) -> Kind:
    """An output's kind by its content type: image/*, video/*, audio/* are themselves, text/plain is text,
    anything else (3-D models, archives, unknown bytes) a file."""
    essence = media_type.split(";", 1)[0].strip().lower()
    major = _MEDIA_KINDS.get(essence.split("/", 1)[0])
    if major is not None:
        return major
    return "text" if essence == "text/plain" else "file"


def kind_named(name: str, media_type: str) -> Kind:
    """``name`` when it is a kind, else the kind of ``media_type`` (records older than kinds have none)."""
    return _KINDS_BY_NAME.get(name) or kind_of(media_type)


def inline_text(text: str | None) -> str | None:
    """What a run record keeps of a text output inline: its first :data:`INLINE_TEXT_CHARS` characters."""
    return None if text is None else text[:INLINE_TEXT_CHARS]
