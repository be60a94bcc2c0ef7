"""Writing an output's bytes to a folder atomically: a temporary file beside the target, then a rename.

A reader of the folder sees a whole file or none (never half of one, even after a crash), and a
download that fails, or whose bytes do not match the size (and sha256, when the API gives one) the
run names, leaves no file behind. Output file names come from the server: only their last component
is used, so no name writes outside the folder.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from types import TracebackType

from comfy_dispatch_client.errors import DownloadFailed
from comfy_dispatch_client.models import Output

PART_SUFFIX = ".part"
"""The suffix of a download not finished yet (a process killed mid-download leaves one)."""


def target_path(folder: Path, filename: str) -> Path:
    """Where an output named ``filename`` goes in ``folder``; DownloadFailed for a name that is no file name."""
    name = filename.replace("\\", "/").rsplit("/", 1)[-1]
    if name in ("", ".", "..") or "\0" in name:
        raise DownloadFailed(f"output file name {filename!r} cannot be used as a file name")
    return folder / name


def remove_partial(folder: Path) -> int:
    """Delete what killed downloads left in ``folder`` (``.<name>.*.part``); how many files that was."""
    if not folder.is_dir():
        return 0
    removed = 0
    for part in folder.glob(f".*{PART_SUFFIX}"):
        part.unlink(missing_ok=True)
        removed += 1
    return removed


class OutputFile:
    """``with OutputFile(output, path) as f: f.write(chunk)...``: ``path`` appears, whole, synced and checked
    against ``output``'s size and sha256 (when the API gave them), only when the block ends without error."""

    def __init__(self, output: Output, path: Path) -> None:
        self.output = output
        self.path = path
        self.written = 0
        self._digest = hashlib.sha256()
        self._fd = -1
        self._name = ""

    def __enter__(self) -> OutputFile:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd, self._name = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=PART_SUFFIX)
        return self

    def write(self, chunk: bytes) -> None:
        view = memoryview(chunk)
        while view:
            view = view[os.write(self._fd, view) :]
        self.written += len(chunk)
        self._digest.update(chunk)

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        try:
            if kind is None:
                self._check()
                os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1
            if kind is None:
                os.replace(self._name, self.path)
                _sync_folder(self.path.parent)
        finally:
            if self._fd >= 0:
                os.close(self._fd)
            if os.path.exists(self._name):
                os.unlink(self._name)

    def _check(self) -> None:
        expected = self.output
        if expected.size and self.written != expected.size:
            raise DownloadFailed(f"{expected.filename}: got {self.written} bytes, the run says {expected.size}")
        if expected.sha256 and self._digest.hexdigest() != expected.sha256.lower():
            raise DownloadFailed(f"{expected.filename}: its sha256 is not the one the run says")


def _sync_folder(folder: Path) -> None:
    # The rename is durable once the folder is synced; some systems cannot open a folder (Windows): skip there.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
