"""Drive one prompt on one ComfyUI to its end, and return its history entry.

Waits on ComfyUI's websocket events, never on a timer. When the socket is
silent for a long while it asks ``/history`` and ``/queue`` once, to tell a
long node from a ComfyUI that lost the prompt.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from dispatcher.comfyui.client import ComfyClient
from dispatcher.comfyui.events import Outcome, Tracker
from dispatcher.comfyui.stream import EventStream
from dispatcher.errors import (
    ComfyUIExecutionError,
    ComfyUIInterrupted,
    ComfyUIUnavailable,
    LeaseLost,
    RunCanceled,
    RunTimeout,
)

log = logging.getLogger(__name__)

SILENCE_CHECK_SECONDS = 30.0
# The executing thread wakes at least this often to notice a lost lease or a cancel between frames.
STOP_CHECK_SECONDS = 1.0
# Progress is written to Redis at most this often (plus on every node change).
PROGRESS_WRITE_INTERVAL = 0.25

ProgressCallback = Callable[[float, str | None], None]
StopCheck = Callable[[], str | None]  # returns a reason to stop (STOP_CANCELED, or another) or None
STOP_CANCELED = "canceled"


def follow_prompt(
    client: ComfyClient,
    graph: dict[str, Any],
    *,
    prompt_id: str,
    client_id: str,
    deadline: float,
    recover: bool,
    on_progress: ProgressCallback,
    should_stop: StopCheck,
) -> dict[str, Any]:
    """Post ``graph`` (unless ``recover`` finds it already there) and follow it to its end.

    Returns the history entry of a successful prompt; raises a ComfyUIError
    subclass (execution error, interrupt, unavailable, timeout) or LeaseLost.
    """
    with EventStream(client.ws_url, client_id, connect_timeout=client.timeout) as stream:
        # A retry may find its prompt already done or still queued on this ComfyUI: never post it twice.
        if recover:
            entry = client.history(prompt_id)
            if entry is not None and entry.get("status", {}).get("completed"):
                log.info("prompt %s already finished on %s; taking its outputs", prompt_id, client.base_url)
                return entry
            if prompt_id in client.queue():
                log.info("prompt %s is still queued on %s; following it", prompt_id, client.base_url)
            else:
                client.post_prompt(graph, prompt_id=prompt_id, client_id=client_id)
        else:
            client.post_prompt(graph, prompt_id=prompt_id, client_id=client_id)

        tracker = Tracker(prompt_id, total_nodes=len(graph))
        last_write = 0.0
        last_node: str | None = None
        last_frame = time.monotonic()
        while not tracker.ended:
            reason = should_stop()
            if reason is not None:
                _stop(client, prompt_id)
                raise RunCanceled("canceled by request") if reason == STOP_CANCELED else LeaseLost(reason)
            now = time.monotonic()
            if now >= deadline:
                _stop(client, prompt_id)
                raise RunTimeout("the run exceeded its time limit; ComfyUI was interrupted")
            try:
                message = stream.recv(timeout=min(deadline - now, STOP_CHECK_SECONDS))
            except ComfyUIUnavailable:
                # The socket dropped; the prompt may still have finished. Ask before calling it lost.
                entry = client.history(prompt_id)
                if entry is not None and entry.get("status", {}).get("completed"):
                    return entry
                raise
            if message is None:
                if time.monotonic() - last_frame >= SILENCE_CHECK_SECONDS:
                    _check_alive(client, prompt_id)
                    last_frame = time.monotonic()
                continue
            last_frame = time.monotonic()
            if tracker.feed(message):
                moment = time.monotonic()
                if tracker.node != last_node or moment - last_write >= PROGRESS_WRITE_INTERVAL:
                    on_progress(tracker.progress, tracker.node)
                    last_write, last_node = moment, tracker.node

        if tracker.outcome is Outcome.ERROR:
            raise ComfyUIExecutionError(tracker.outcome_data)
        if tracker.outcome is Outcome.INTERRUPTED:
            if should_stop() == STOP_CANCELED:  # the cancel watcher interrupted it already
                raise RunCanceled("canceled by request")
            # Nobody here asked for it: someone used ComfyUI directly. Worth another try.
            raise ComfyUIInterrupted(tracker.outcome_data, requested=False)

    entry = client.history(prompt_id)
    if entry is None:
        # executing/null is sent after history is stored, so this is a ComfyUI that restarted just now.
        raise ComfyUIUnavailable(f"prompt {prompt_id} finished but has no history")
    return entry


def _stop(client: ComfyClient, prompt_id: str) -> None:
    """Stop our prompt whether it runs or still waits in ComfyUI's queue."""
    client.interrupt(prompt_id)
    client.delete_pending(prompt_id)


def _check_alive(client: ComfyClient, prompt_id: str) -> None:
    entry = client.history(prompt_id)
    if entry is not None:
        return
    if prompt_id not in client.queue():
        raise ComfyUIUnavailable(f"prompt {prompt_id} is neither queued nor in history: ComfyUI lost it")
