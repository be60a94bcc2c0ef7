"""Storing one output of a run: stream it from ComfyUI's ``/view`` into the output store, retried a few times.

A worker on ComfyUI's own host may be given ComfyUI's output folder (``COMFY_DISPATCH_COMFYUI_OUTPUT_DIR``): an
output is then read from the file ComfyUI saved, with no HTTP request to ComfyUI, which at that moment is
busy finishing the prompt (the download was the longest step between a prompt's end and its run's). A file
not found there (another host's folder, a path that leaves the folder) is downloaded over ``/view`` as ever.

The store's own client may retry too (boto3 does, for S3), but it cannot replay a download it has
already consumed; a retry here downloads the file again. What still fails after ``STORE_ATTEMPTS``
becomes :class:`OutputNotStored`, a transient error: the run goes back to its backlog and is retried
as a whole, and it never ends ``succeeded`` with an output missing.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from urllib3.exceptions import HTTPError

from dispatcher.backoff import full_jitter
from dispatcher.comfyui.client import ComfyClient
from dispatcher.errors import OutputNotStored, StorageError
from dispatcher.outputs import OutputFile
from dispatcher.storage import OutputStore

log = logging.getLogger(__name__)

STORE_ATTEMPTS = 3
CHUNK_BYTES = 256 * 1024  # read from ComfyUI's folder this much at a time
STORE_RETRY_BASE = 0.5  # seconds; full jitter, doubling: at most 0.5 s, then 1 s
STORE_RETRY_CAP = 4.0


def store_output(
    client: ComfyClient,
    store: OutputStore,
    file: OutputFile,
    key: str,
    content_type: str,
    *,
    attempts: int = STORE_ATTEMPTS,
    sleep: Callable[[float], None] = time.sleep,
    local_dir: Path | None = None,
) -> int:
    """Download ``file`` from ComfyUI into ``store`` under ``key``; returns its size. A text output has no file
    on ComfyUI: its string is stored, UTF-8.

    Retries store failures (StorageError) and broken downloads (a connection dropped mid-file); a
    ComfyUI that refuses the file (``ComfyUIError``) is not retried here.
    """
    for attempt in range(1, attempts + 1):
        try:
            if file.text is not None:
                return store.put(key, [file.text.encode()], content_type)
            saved = _open_saved(local_dir, file) if local_dir is not None else None
            if saved is not None:
                with saved:
                    return store.put(key, _chunks(saved), content_type)
            with client.view(file.filename, file.subfolder, file.type) as chunks:
                return store.put(key, chunks, content_type)
        except (StorageError, HTTPError) as exc:
            if attempt >= attempts:
                raise OutputNotStored(f"output {key} not stored after {attempts} tries: {exc}") from exc
            delay = full_jitter(attempt, base=STORE_RETRY_BASE, cap=STORE_RETRY_CAP)
            log.warning("storing output %s failed (%s); try %d of %d in %.2fs", key, exc, attempt + 1, attempts, delay)
            sleep(delay)
    raise AssertionError("unreachable: the loop returns or raises")  # for mypy; attempts >= 1


def _chunks(stream: BinaryIO) -> Iterator[bytes]:
    while chunk := stream.read(CHUNK_BYTES):
        yield chunk


def _open_saved(output_dir: Path, file: OutputFile) -> BinaryIO | None:
    path = saved_file(output_dir, file)
    if path is None:
        return None
    try:
        return path.open("rb")
    except OSError as exc:
        log.info("output %s not read from %s (%s): downloading it from ComfyUI", file.filename, output_dir, exc)
        return None


def saved_file(output_dir: Path, file: OutputFile) -> Path | None:
    """Where ComfyUI saved an ``output`` file under its output folder ``output_dir`` (as its ``/view`` finds it);
    None for another type of file (temp, input) or a name that would leave the folder."""
    if file.type != "output" or not file.filename or "/" in file.filename or "\\" in file.filename:
        return None
    root = os.path.abspath(output_dir)
    path = os.path.abspath(os.path.join(root, file.subfolder, file.filename))
    if os.path.commonpath((root, path)) != root:
        return None
    return Path(path)
