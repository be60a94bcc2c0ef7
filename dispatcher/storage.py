"""Where run outputs are kept: a narrow interface, a local-disk store and an in-memory twin.

Keys look like ``<run_id>/<attempt>/<name>``: an attempt never overwrites
another attempt's file, and a run's files never mix with another run's.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Protocol

from dispatcher.errors import OutputNotFound, StorageError

if TYPE_CHECKING:
    from dispatcher.settings import Settings


class OutputStore(Protocol):
    def put(self, key: str, chunks: Iterable[bytes], content_type: str) -> int:
        """Store the bytes under ``key``; returns the size. Atomic: a reader sees all or nothing."""
        ...

    def open(self, key: str) -> BinaryIO:
        """Read a stored file; raises OutputNotFound."""
        ...

    def url(self, key: str) -> str | None:
        """A URL clients can fetch directly, or None when the API serves the bytes."""
        ...

    def prepare(self, prefix: str) -> None:
        """Get ready for keys under ``prefix`` (``<run_id>/<attempt>``) before the first ``put``: the worker calls
        it while ComfyUI executes the prompt, so storing its outputs afterwards does less. Raises StorageError
        or OSError; ``put`` works whether or not it was called."""
        ...

    def unprepare(self, prefix: str) -> None:
        """Undo :meth:`prepare` for an attempt that stored nothing under ``prefix`` (failed, canceled, no file
        output): nothing of it is left behind. Raises StorageError or OSError."""
        ...


def _check_key(key: str) -> str:
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise StorageError(f"invalid output key {key!r}")
    return key


class LocalStore:
    """Outputs as files under one directory."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()

    def _path(self, key: str) -> Path:
        return self.root / _check_key(key)

    def put(self, key: str, chunks: Iterable[bytes], content_type: str) -> int:
        path = self._path(key)
        size = 0
        # Write aside and rename, so a crash mid-download never leaves half a file under the final name. The
        # aside name is this thread's own (no random name to draw and retry: mkstemp costs several times more).
        tmp = path.with_name(f".part-{os.getpid()}-{threading.get_ident()}-{path.name}")
        try:
            with _create(tmp) as fh:
                for chunk in chunks:
                    fh.write(chunk)
                    size += len(chunk)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return size

    def prepare(self, prefix: str) -> None:
        # Creating directories is the slowest part of a put on a journaling file system (a median of a
        # quarter of a millisecond, several in the tail, on ext4 here); done now, it is off the run's path.
        self._path(prefix).mkdir(parents=True, exist_ok=True)

    def unprepare(self, prefix: str) -> None:
        folder = self._path(prefix)
        for empty in (folder, folder.parent):  # the attempt's folder, then the run's unless another attempt's is in it
            if empty == self.root:
                break
            try:
                empty.rmdir()
            except OSError:  # gone already, or not empty: a file, or another attempt, to keep
                break

    def open(self, key: str) -> BinaryIO:
        try:
            return self._path(key).open("rb")
        except (FileNotFoundError, IsADirectoryError, StorageError) as exc:
            raise OutputNotFound(key) from exc

    def url(self, key: str) -> str | None:
        return None


def _create(path: Path) -> BinaryIO:
    """``path`` opened to write, its folders made first; again once if they went meanwhile: another attempt of
    the same run that stored nothing may take the run's (empty) folder away between the two steps."""

    def made() -> BinaryIO:
        path.parent.mkdir(parents=True, exist_ok=True)
        return open(path, "wb")

    try:
        return made()
    except FileNotFoundError:
        return made()


class MemoryStore:
    """The in-memory twin, for tests."""

    def __init__(self) -> None:
        self.files: dict[str, tuple[bytes, str]] = {}

    def put(self, key: str, chunks: Iterable[bytes], content_type: str) -> int:
        data = b"".join(chunks)
        self.files[_check_key(key)] = (data, content_type)
        return len(data)

    def prepare(self, prefix: str) -> None:
        _check_key(prefix)

    def unprepare(self, prefix: str) -> None:
        _check_key(prefix)

    def open(self, key: str) -> BinaryIO:
        import io

        try:
            return io.BytesIO(self.files[key][0])
        except KeyError as exc:
            raise OutputNotFound(key) from exc

    def url(self, key: str) -> str | None:
        return None


def make_store(settings: Settings) -> OutputStore:
    """The output store ``settings.storage`` names: ``local`` (``output_dir``) or ``s3``."""
    if settings.storage == "s3":
        # Imported here: boto3 is slow to import, and local storage never needs it.
        from dispatcher.storage_s3 import S3Store

        return S3Store.from_settings(settings)
    return LocalStore(settings.output_dir)
