"""The results file of ``comfy-dispatch batch``, on disk: read at start (a torn last line cut away), then appended
to one whole line at a time, each synced before the next, so a SIGKILL or a power cut leaves whole lines only
(and at worst a torn last one, which the next start cuts away: that line is done again)."""

from __future__ import annotations

import os
from pathlib import Path
from types import TracebackType

from dispatcher.cli.batchfile import ResultsScan, scan_results


class ResultsFile:
    """``results, scan = ResultsFile.open(path)``: the records so far in ``scan``; ``results.append(line)`` for more."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd = fd

    @classmethod
    def open(cls, path: Path) -> tuple[ResultsFile, ResultsScan]:
        """Read ``path`` (created if missing), cut a torn last line, and open it for appending.

        Raises OSError if it cannot be read or written, and batchfile.ResultsError if it is not a results file.
        """
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            scan = scan_results(_read_all(fd))
            if scan.torn:
                os.ftruncate(fd, scan.whole_bytes)
                os.fsync(fd)
        except BaseException:
            os.close(fd)
            raise
        return cls(path, fd), scan

    def append(self, line: bytes) -> None:
        """Write one whole line (newline included) at the end, and sync it to disk before returning."""
        view = memoryview(line)
        # One write() for a regular file writes it all; the loop only covers a write the kernel cut short.
        while view:
            view = view[os.write(self._fd, view) :]
        os.fsync(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> ResultsFile:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


def _read_all(fd: int) -> bytes:
    os.lseek(fd, 0, os.SEEK_SET)
    chunks = []
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)
