"""Listens for cancels (``keys.CANCEL``) and stops the canceled run on ComfyUI when this worker holds it; and for
runs the scheduler asks back (``keys.RELEASE``: another worker idles), which are handed back if not started.

A held run may wait in ComfyUI's queue behind the one executing: deleting it there (``POST /queue
{"delete"}``) means it never executes. One executing is interrupted (``POST /interrupt {"prompt_id"}``
stops only that prompt); ComfyUI then sends ``execution_interrupted``. Either way the run's thread sees
the cancel and ends the run as canceled.
"""

from __future__ import annotations

import logging
import threading

from redis.exceptions import RedisError

from dispatcher import keys
from dispatcher.errors import ComfyUIError
from worker.context import WorkerContext
from worker.follow import stop_prompt

log = logging.getLogger(__name__)


class CancelWatcher(threading.Thread):
    def __init__(self, ctx: WorkerContext) -> None:
        super().__init__(name="cancel-watch", daemon=True)
        self.ctx = ctx
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            pubsub = self.ctx.conns.text.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
            try:
                pubsub.subscribe(keys.CANCEL, keys.RELEASE)
                while not self.stopped.is_set():
                    message = pubsub.get_message(timeout=1.0)
                    if message is None:
                        continue
                    if message["channel"] == keys.RELEASE:
                        self.on_release(str(message["data"]))
                    else:
                        self.on_cancel(str(message["data"]))
            except Exception as exc:
                if self.stopped.is_set():
                    return  # the worker stops and closed its connections under us: nothing went wrong
                if isinstance(exc, RedisError):
                    log.warning("cancel watcher lost Redis; resubscribing")
                else:  # a bug here must not end cancels for the worker's whole life: log, go on
                    log.exception("cancel watcher failed; resubscribing")
                self.stopped.wait(1.0)
            finally:
                pubsub.close()

    def on_release(self, run_id: str) -> None:
        """The scheduler asks for a run back (another worker idles): handed back unless its ComfyUI started it."""
        held = self.ctx.pipeline.get(run_id)
        if held is not None and not held.executing:
            log.info("run %s asked back for an idle worker", run_id)
            held.release.set()

    def on_cancel(self, run_id: str) -> None:
        # Remembered a while when not held: it may be a run being claimed here this very moment.
        held = self.ctx.pipeline.cancel(run_id)
        if held is None or not held.posted:
            return  # its thread sees the cancel before it posts the prompt
        log.info("run %s canceled: stopping it on ComfyUI", run_id)
        try:
            stop_prompt(self.ctx.client, held.prompt_id)
        except ComfyUIError as exc:
            log.warning("could not stop run %s on ComfyUI: %s", run_id, exc)
