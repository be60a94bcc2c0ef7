"""Listens for cancels (``keys.CANCEL``) and interrupts ComfyUI when the current run is the one canceled.

Interrupting from here, at once, makes ComfyUI send ``execution_interrupted``
on the run's websocket: the executing thread wakes on that event and ends the
run as canceled.
"""

from __future__ import annotations

import logging
import threading

from redis.exceptions import RedisError

from dispatcher import keys
from dispatcher.errors import ComfyUIError
from worker.context import WorkerContext

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
                pubsub.subscribe(keys.CANCEL)
                while not self.stopped.is_set():
                    message = pubsub.get_message(timeout=1.0)
                    if message is not None:
                        self.on_cancel(str(message["data"]))
            except RedisError:
                log.warning("cancel watcher lost Redis; resubscribing")
                self.stopped.wait(1.0)
            except Exception:  # a bug here must not end cancels for the worker's whole life: log, go on
                log.exception("cancel watcher failed; resubscribing")
                self.stopped.wait(1.0)
            finally:
                pubsub.close()

    def on_cancel(self, run_id: str) -> None:
        state = self.ctx.state
        with state.lock:
            if run_id != state.current_run:
                return
            state.canceled.set()
            prompt_id = state.current_prompt
        log.info("run %s canceled: interrupting ComfyUI", run_id)
        try:
            self.ctx.client.interrupt(prompt_id)
            self.ctx.client.delete_pending(prompt_id)
        except ComfyUIError as exc:
            log.warning("could not interrupt ComfyUI for run %s: %s", run_id, exc)
