"""The fake's folders and ComfyUI's file-naming rules: save counters, upload names, ``/view`` path checks.

Behaviour follows ComfyUI 0.3.64 ``folder_paths.get_save_image_path`` and ``server.py`` (``image_upload``,
``view_image``), reimplemented.
"""

from __future__ import annotations

import hashlib
import mimetypes
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path


class OutsideOutputFolder(Exception):
    """Raised when a filename prefix would save outside the output folder (ComfyUI raises a bare Exception)."""


class BadPath(ValueError):
    """Raised when a client-supplied name or subfolder escapes its folder; carries the HTTP status ComfyUI uses."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


@dataclass(frozen=True)
class Dirs:
    """output/, input/ and temp/ under one base folder; ``owned`` when the fake created the base and removes it."""

    base: str
    output: str
    input: str
    temp: str
    owned: bool

    @classmethod
    def create(cls, base: str | None) -> Dirs:
        owned = base is None
        root = os.path.realpath(tempfile.mkdtemp(prefix="fake-comfyui-") if base is None else base)
        dirs = cls(root, os.path.join(root, "output"), os.path.join(root, "input"), os.path.join(root, "temp"), owned)
        for path in (dirs.output, dirs.input):
            os.makedirs(path, exist_ok=True)
        # ComfyUI empties its temp folder at start-up: previews never outlive the server.
        shutil.rmtree(dirs.temp, ignore_errors=True)
        os.makedirs(dirs.temp, exist_ok=True)
        return dirs

    def cleanup(self) -> None:
        shutil.rmtree(self.temp, ignore_errors=True)
        if self.owned:
            shutil.rmtree(self.base, ignore_errors=True)

    def by_type(self, kind: str | None) -> str | None:
        return {"output": self.output, "input": self.input, "temp": self.temp}.get(kind or "")

    def input_images(self) -> list[str]:
        """Image files directly in input/ (LoadImage's combo list), as ComfyUI filters them by MIME type."""
        names = [n for n in os.listdir(self.input) if os.path.isfile(os.path.join(self.input, n))]
        # ComfyUI also counts .webp, which some mimetypes tables do not know.
        return sorted(n for n in names if n.lower().endswith(".webp") or _mime(n).startswith("image/"))

    def annotated(self, name: str) -> tuple[str, str | None]:
        """``"x.png [output]"`` -> (``"x.png"``, output folder); ``None`` as folder when there is no suffix."""
        for kind in ("output", "input", "temp"):
            suffix = f" [{kind}]"
            if name.endswith(suffix):
                return name[: -len(suffix)], self.by_type(kind)
        return name, None

    def input_path(self, name: str) -> str:
        """Where LoadImage reads ``name`` (input/ unless annotated)."""
        bare, folder = self.annotated(name)
        return os.path.join(folder or self.input, bare)


def _mime(name: str) -> str:
    return mimetypes.guess_type(name)[0] or ""


def _expand_vars(prefix: str, width: int, height: int) -> str:
    now = time.localtime()
    for key, value in (
        ("%width%", str(width)),
        ("%height%", str(height)),
        ("%year%", str(now.tm_year)),
        ("%month%", f"{now.tm_mon:02}"),
        ("%day%", f"{now.tm_mday:02}"),
        ("%hour%", f"{now.tm_hour:02}"),
        ("%minute%", f"{now.tm_min:02}"),
        ("%second%", f"{now.tm_sec:02}"),
    ):
        prefix = prefix.replace(key, value)
    return prefix


def save_image_path(prefix: str, output_dir: str, width: int = 0, height: int = 0) -> tuple[str, str, int, str]:
    """(folder, file stem, first free counter, subfolder) for a SaveImage ``filename_prefix``.

    ``"a/b"`` saves in subfolder ``a`` as ``b_00001_.png``; the counter continues after the highest
    ``{stem}_NNNNN_`` already in the folder.
    """
    if "%" in prefix:
        prefix = _expand_vars(prefix, width, height)
    subfolder = os.path.dirname(os.path.normpath(prefix))
    stem = os.path.basename(os.path.normpath(prefix))
    folder = os.path.join(output_dir, subfolder)
    absolute = os.path.abspath(folder)
    common = os.path.commonpath((output_dir, absolute))
    if common != output_dir:
        raise OutsideOutputFolder(
            "**** ERROR: Saving image outside the output folder is not allowed."
            f"\n full_output_folder: {absolute}"
            f"\n         output_dir: {output_dir}"
            f"\n         commonpath: {common}"
        )
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        os.makedirs(folder, exist_ok=True)
        return folder, stem, 1, subfolder
    counters = [0]
    for name in names:
        head, tail = name[: len(stem) + 1], name[len(stem) + 1 :]
        if os.path.normcase(head[:-1]) != os.path.normcase(stem) or head[-1:] != "_":
            continue
        try:
            counters.append(int(tail.split("_")[0]))
        except ValueError:
            counters.append(0)
    return folder, stem, max(counters) + 1, subfolder


def _same_content(path: str, data: bytes) -> bool:
    with open(path, "rb") as existing:
        return hashlib.sha256(existing.read()).digest() == hashlib.sha256(data).digest()


def store_upload(folder: str, filename: str, subfolder: str, data: bytes, overwrite: bool) -> str:
    """Write an uploaded file as ComfyUI does and return the name it got.

    Without ``overwrite`` an existing name gets `` (1)``, `` (2)``... unless the existing file has the same
    bytes, in which case that name is reused and nothing is written.
    """
    target_dir = os.path.join(folder, os.path.normpath(subfolder))
    path = os.path.abspath(os.path.join(target_dir, filename))
    if os.path.commonpath((folder, path)) != folder:
        raise BadPath(400)
    os.makedirs(target_dir, exist_ok=True)
    stem, ext = os.path.splitext(filename)
    if not overwrite:
        counter = 1
        while os.path.exists(path):
            if _same_content(path, data):
                return filename
            filename = f"{stem} ({counter}){ext}"
            path = os.path.join(target_dir, filename)
            counter += 1
    Path(path).write_bytes(data)
    return filename


def resolve_view(dirs: Dirs, filename: str, subfolder: str | None, kind: str | None) -> str:
    """The file ``/view`` serves; raises :class:`BadPath` (400/403) or FileNotFoundError (404)."""
    name, folder = dirs.annotated(filename)
    if not name or name[0] == "/" or ".." in name:
        raise BadPath(400)
    if not folder:
        found = dirs.by_type(kind or "output")
        if found is None:
            raise BadPath(400)
        folder = found
    if subfolder is not None:
        inner = os.path.join(folder, subfolder)
        if os.path.commonpath((os.path.abspath(inner), folder)) != folder:
            raise BadPath(403)
        folder = inner
    path = os.path.join(folder, os.path.basename(name))
    if not os.path.isfile(path):
        raise FileNotFoundError(path)
    return path
