"""Storing one output of a run: stream it from ComfyUI's ``/view`` into the output store, retried a few times.

The store's own client may retry too (boto3 does, for S3), but it cannot replay a download it has
already consumed; a retry here downloads the file again. What still fails after ``STORE_ATTEMPTS``
becomes :class:`OutputNotStored`, a transient error: the run goes back to its backlog and is retried
as a whole, and it never ends ``succeeded`` with an output missing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from urllib3.exceptions import HTTPError

from dispatcher.backoff import full_jitter
from dispatcher.comfyui.client import ComfyClient
from dispatcher.errors import OutputNotStored, StorageError
from dispatcher.outputs import OutputFile
from dispatcher.storage import OutputStore

log = logging.getLogger(__name__)

STORE_ATTEMPTS = 3
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
            with client.view(file.filename, file.subfolder, file.type) as chunks:
                return store.put(key, chunks, content_type)
        except (StorageError, HTTPError) as exc:
            if attempt >= attempts:
                raise OutputNotStored(f"output {key} not stored after {attempts} tries: {exc}") from exc
            delay = full_jitter(attempt, base=STORE_RETRY_BASE, cap=STORE_RETRY_CAP)
            log.warning("storing output %s failed (%s); try %d of %d in %.2fs", key, exc, attempt + 1, attempts, delay)
            sleep(delay)
    raise AssertionError("unreachable: the loop returns or raises")  # for mypy; attempts >= 1
