"""What this worker's ComfyUI can run and what it ran last, for model-aware routing (:mod:`dispatcher.routing`).

The capability set (node classes, model files per folder, loader inputs) is read from ComfyUI at the worker's
start, whenever its ComfyUI comes back (it may have restarted with other custom nodes or files) and every
``capabilities_refresh_seconds``; it is published under its digest, which the heartbeat names (``caps``) and
whose expiry each beat renews. A read that fails (ComfyUI going down halfway) keeps the set published before
and is tried again at the next beat.

The checkpoint is the diffusion model of the last run posted: the one ComfyUI keeps loaded, so a run needing
another pays a load (counted as a model switch).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from redis.exceptions import RedisError

from dispatcher import metrics
from dispatcher.comfyui.client import ComfyClient
from dispatcher.errors import ComfyUIError
from dispatcher.routing.capabilities import Capabilities, from_comfyui
from worker.context import WorkerContext, WorkerState

log = logging.getLogger(__name__)


def discover(client: ComfyClient) -> tuple[Capabilities, dict[str, Any]]:
    """Read what ``client``'s ComfyUI has: ``/object_info`` and its model folders' files; returns the set and the
    node definitions as read (published too: they convert UI-format workflows)."""
    definitions = client.object_info()
    return from_comfyui(definitions, client.model_folders()), definitions


def publish(ctx: WorkerContext) -> str:
    """Discover this worker's capabilities and publish them; returns their digest, kept in ``ctx.state.caps``.

    Raises ComfyUIError when ComfyUI does not answer, RedisError when Redis does not.
    """
    capabilities, definitions = discover(ctx.client)
    digest = ctx.capabilities.publish(capabilities, definitions)
    with ctx.state.lock:
        before = ctx.state.caps
        ctx.state.caps, ctx.state.caps_read_at = digest, time.monotonic()
    if digest != before:
        log.info(
            "ComfyUI %s has %d node classes, model files %s (capability set %s)",
            ctx.client.base_url,
            len(capabilities.nodes),
            capabilities.model_counts() or "none",
            digest,
        )
    return digest


def due(state: WorkerState, refresh_seconds: float, now: float) -> bool:
    """Whether the set must be read again at ``now`` (``time.monotonic()``)."""
    return state.caps_read_at is None or now - state.caps_read_at >= refresh_seconds


def refresh(ctx: WorkerContext) -> None:
    """Read and publish the set again if it is due; never raises (the heartbeat calls it)."""
    if not due(ctx.state, ctx.settings.capabilities_refresh_seconds, time.monotonic()):
        return
    try:
        publish(ctx)
    except Exception as exc:  # the heartbeat's thread: a failed read must not stop the beats; next beat tries again
        with ctx.state.lock:
            failing, ctx.state.caps_failing, ctx.state.caps_read_at = ctx.state.caps_failing, True, None
        if not failing:  # said once per outage, not at every beat while it lasts
            expected = isinstance(exc, ComfyUIError | RedisError)
            log.warning(
                "could not read what ComfyUI %s can run (%s: %s); trying again at each heartbeat",
                ctx.client.base_url,
                exc.__class__.__name__,
                exc,
                exc_info=not expected,  # anything else is a reply of a shape we did not expect: show where
            )
    else:
        ctx.state.caps_failing = False


def invalidate(ctx: WorkerContext) -> None:
    """Read the set again at the next chance: ComfyUI went away (and may come back with other nodes or files),
    or the published set is gone from Redis."""
    with ctx.state.lock:
        ctx.state.caps_read_at = None


def note_posted(ctx: WorkerContext, checkpoint: str) -> None:
    """A run was posted to this worker's ComfyUI, loading ``checkpoint`` ('' for none): a switch from another
    one is counted; the heartbeat reports the new one."""
    if not checkpoint:
        return
    with ctx.state.lock:
        before, ctx.state.checkpoint = ctx.state.checkpoint, checkpoint
    if is_switch(before, checkpoint):
        metrics.MODEL_SWITCHES.inc()


def is_switch(before: str, after: str) -> bool:
    """Whether posting a run that loads ``after`` replaces the model ``before`` on the GPU ('' for none)."""
    return bool(before) and bool(after) and before != after
