"""Drive one prompt on one ComfyUI to its end: post it (or find it there already), follow its events, end.

Waits on ComfyUI's websocket events (the worker's one socket, :mod:`dispatcher.comfyui.stream`), never on
a timer. The run's time limit counts from ``execution_start``: a prompt waiting in ComfyUI's queue behind
another one is not running yet. A retry never posts blindly: it looks in ``/queue`` (follows the prompt)
and then in ``/history`` (takes its outputs) first. When the socket is silent for a long while, or drops,
``/queue`` and ``/history`` tell a long node from a ComfyUI that lost the prompt.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dispatcher.comfyui.client import ComfyClient
from dispatcher.comfyui.events import Outcome, Tracker, history_gpu_seconds
from dispatcher.comfyui.stream import DISCONNECTED, EventHub, Subscription
from dispatcher.errors import (
    ComfyUIExecutionError,
    ComfyUIInterrupted,
    ComfyUIUnavailable,
    LeaseLost,
    RunCanceled,
    RunReleased,
    RunTimeout,
)

log = logging.getLogger(__name__)

SILENCE_CHECK_SECONDS = 30.0
# The run's thread wakes at least this often to notice a lost lease or a cancel between frames.
STOP_CHECK_SECONDS = 1.0
# Progress is written to Redis at most this often, the first time this long after the prompt started:
# a run of a few milliseconds writes none (its end says 1.0), and never waits on a write while it runs.
PROGRESS_WRITE_INTERVAL = 0.25

ProgressCallback = Callable[[float, str | None], None]
StopCheck = Callable[[], str | None]  # returns a reason to stop (STOP_CANCELED, STOP_RELEASE, or another) or None
STOP_CANCELED = "canceled"
STOP_RELEASE = "release"  # the worker stops: give the run back if ComfyUI has not started it
STOP_SUPERSEDED = "superseded"  # a newer attempt follows this same prompt: leave it alone


@dataclass(frozen=True)
class Finished:
    """A prompt that ended well: its outputs (node id -> UI output, as ``/history`` lists them) and GPU time."""

    outputs: dict[str, Any]
    gpu_seconds: float | None

    @classmethod
    def from_history(cls, entry: dict[str, Any]) -> Finished:
        outputs = entry.get("outputs")
        return cls(outputs if isinstance(outputs, dict) else {}, history_gpu_seconds(entry))


@dataclass(frozen=True)
class Prompt:
    """What to run and how: the bound graph under the run's own prompt id, and its limits."""

    prompt_id: str
    graph: dict[str, Any]
    timeout: float  # seconds from execution_start
    recover: bool  # an earlier attempt may have posted it: look in /queue and /history first


class PromptFollower:
    """One prompt from post to end, fed by its subscription on the worker's socket."""

    def __init__(
        self,
        client: ComfyClient,
        hub: EventHub,
        prompt: Prompt,
        *,
        on_progress: ProgressCallback,
        should_stop: StopCheck,
        on_start: Callable[[], None] = lambda: None,
        on_posted: Callable[[], None] = lambda: None,
        on_output: Callable[[str, dict[str, Any]], None] = lambda node, output: None,
    ) -> None:
        self.client = client
        self.hub = hub
        self.prompt = prompt
        self.on_progress = on_progress
        self.should_stop = should_stop
        self.on_start = on_start
        self.on_posted = on_posted
        self.on_output = on_output
        self.tracker = Tracker(prompt.prompt_id, total_nodes=len(prompt.graph))
        self.started_at: float | None = None  # monotonic time the prompt began executing (our limit's origin)
        self.deaf = False  # its events go to another client: /history is asked when the queue changes
        self.missed = False  # frames may have been lost (socket dropped): take the outputs from /history
        self.finished: Finished | None = None
        self.posted = False  # in ComfyUI's queue: posted by us, or found there
        self._last_write = 0.0  # monotonic time progress was last written

    def run(self) -> Finished:
        """Post (or find) the prompt and follow it to its end; raises a ComfyUIError subclass or LeaseLost."""
        self.finished = self._run()
        return self.finished

    @property
    def gpu_seconds(self) -> float:
        """How long ComfyUI executed the prompt: its own timestamps, else our clock since it started, else 0."""
        seconds = self.finished.gpu_seconds if self.finished is not None else self.tracker.gpu_seconds
        if seconds is None and self.started_at is not None:
            seconds = time.monotonic() - self.started_at
        return seconds or 0.0

    def _run(self) -> Finished:
        prompt_id = self.prompt.prompt_id
        with self.hub.subscribe(prompt_id) as sub:
            found = self._find() if self.prompt.recover else False
            if isinstance(found, Finished):
                log.info("prompt %s already finished on %s; taking its outputs", prompt_id, self.client.base_url)
                return found
            if not found:
                self.client.post_prompt(self.prompt.graph, prompt_id=prompt_id, client_id=self.hub.client_id)
            self.posted = True
            self.on_posted()
            return self._follow(sub)

    def _find(self) -> Finished | bool:
        """An earlier attempt's prompt on this ComfyUI: True while queued or running (follow it; ``deaf`` if it
        was posted by another client), its outputs if it finished well, else False (post it). The queue is read
        first: a prompt that ends between the two reads is then seen in the history, never missed by both."""
        prompt_id = self.prompt.prompt_id
        queue = self.client.queue()
        if prompt_id in queue:
            self.deaf = queue.clients.get(prompt_id) != self.hub.client_id
            if prompt_id in queue.running:
                self._begin()  # running already: its time limit counts from now
            log.info("prompt %s is still queued on %s; following it", prompt_id, self.client.base_url)
            return True
        entry = self.client.history(prompt_id)
        if entry is not None and entry.get("status", {}).get("completed"):
            return Finished.from_history(entry)
        if entry is not None:
            # An earlier attempt that failed there: its entry goes, or it would pass for this one's end (or
            # start) under the same prompt id.
            self.client.delete_history(prompt_id)
        return False  # run it again

    def _begin(self) -> None:
        if self.started_at is None:
            self.started_at = time.monotonic()
            self.on_start()

    def _follow(self, sub: Subscription) -> Finished:
        tracker = self.tracker
        last_frame = time.monotonic()
        while not tracker.ended:
            reason = self.should_stop()
            if reason == STOP_RELEASE:
                self._release()
            elif reason is not None:
                if reason != STOP_SUPERSEDED:
                    self._stop()
                raise RunCanceled("canceled by request") if reason == STOP_CANCELED else LeaseLost(reason)
            now = time.monotonic()
            wait = STOP_CHECK_SECONDS
            if self.started_at is not None:
                left = self.started_at + self.prompt.timeout - now
                if left <= 0:
                    self._stop()
                    raise RunTimeout("the run exceeded its time limit; ComfyUI was interrupted")
                wait = min(wait, left)
            message = sub.get(timeout=wait)
            if message is None or message.get("type") == "status":
                if message is not None and self.deaf and (done := self._look()) is not None:
                    return done
                # Status frames (other prompts' queue changes) say nothing of ours: silence is counted
                # from our own last frame, or a prompt ComfyUI lost goes unnoticed on a busy worker.
                if time.monotonic() - last_frame >= SILENCE_CHECK_SECONDS:
                    if (done := self._look()) is not None:
                        return done
                    last_frame = time.monotonic()
                continue
            last_frame = time.monotonic()
            if message is DISCONNECTED:
                if (done := self._after_drop(sub)) is not None:
                    return done
                continue
            changed = tracker.feed(message)
            if tracker.started:
                self._begin()
            if message.get("type") == "executed" and not (self.deaf or self.missed):
                # An output node finished: its files are on ComfyUI's disk now, while the rest of the graph runs.
                data = message.get("data") or {}
                if isinstance(data.get("output"), dict):
                    self.on_output(str(data.get("node")), data["output"])
            if changed and self.started_at is not None:
                moment = time.monotonic()
                if moment - max(self.started_at, self._last_write) >= PROGRESS_WRITE_INTERVAL:
                    self.on_progress(tracker.progress, tracker.node)
                    self._last_write = moment
        return self._ended()

    def _ended(self) -> Finished:
        tracker = self.tracker
        if tracker.outcome is Outcome.ERROR:
            raise ComfyUIExecutionError(tracker.outcome_data)
        if tracker.outcome is Outcome.INTERRUPTED:
            if self.should_stop() == STOP_CANCELED:  # the cancel watcher interrupted it already
                raise RunCanceled("canceled by request")
            # Nobody here asked for it: someone used ComfyUI directly. Worth another try.
            raise ComfyUIInterrupted(tracker.outcome_data, requested=False)
        if tracker.outputs_complete and not self.missed:
            order = {node: i for i, node in enumerate(self.prompt.graph)}
            outputs = dict(sorted(tracker.outputs.items(), key=lambda item: order.get(item[0], len(order))))
            return Finished(outputs, tracker.gpu_seconds)
        entry = self.client.history(self.prompt.prompt_id)
        if entry is None:
            # executing/null is sent after history is stored, so this is a ComfyUI that restarted just now.
            raise ComfyUIUnavailable(f"prompt {self.prompt.prompt_id} finished but has no history")
        return Finished.from_history(entry)

    def _look(self) -> Finished | None:
        """Ask ComfyUI about a prompt whose events we may not get: its end, or None while it is queued."""
        prompt_id = self.prompt.prompt_id
        queue = self.client.queue()
        if prompt_id in queue:
            if prompt_id in queue.running:
                self._begin()
            return None
        entry = self.client.history(prompt_id)
        if entry is None:
            raise ComfyUIUnavailable(f"prompt {prompt_id} is neither queued nor in history: ComfyUI lost it")
        return self._judge(entry)

    def _after_drop(self, sub: Subscription) -> Finished | None:
        """The socket closed: listen again, then find the prompt (its frames meanwhile are lost)."""
        self.missed = True
        try:
            sub.reconnect()
        except ComfyUIUnavailable:
            # ComfyUI is gone; the prompt may have finished just before. Ask before calling it lost.
            entry = self.client.history(self.prompt.prompt_id)
            if entry is not None and entry.get("status", {}).get("completed"):
                return Finished.from_history(entry)
            raise
        return self._look()

    def _judge(self, entry: dict[str, Any]) -> Finished:
        """The end of a prompt as its history entry tells it (when its events were not seen)."""
        status = entry.get("status") or {}
        if status.get("completed"):
            return Finished.from_history(entry)
        for name, data in reversed(status.get("messages") or []):
            if name == "execution_error":
                raise ComfyUIExecutionError(data)
            if name == "execution_interrupted":
                if self.should_stop() == STOP_CANCELED:
                    raise RunCanceled("canceled by request")
                raise ComfyUIInterrupted(data, requested=False)
        raise ComfyUIUnavailable(f"prompt {self.prompt.prompt_id} ended without success in ComfyUI's history")

    def _release(self) -> None:
        """Take the prompt out of ComfyUI's queue unless it started: RunReleased if it is gone from there."""
        if self.started_at is not None:
            return  # it runs: it is finished like any other
        prompt_id = self.prompt.prompt_id
        self.client.delete_pending(prompt_id)
        queue = self.client.queue()
        if prompt_id in queue.running or (prompt_id not in queue and self.client.history(prompt_id) is not None):
            self._begin()  # it started (or even ended) before the delete, its frames not read yet: finish it
        elif prompt_id not in queue:
            raise RunReleased(f"prompt {prompt_id} taken out of ComfyUI's queue before it started")

    def _stop(self) -> None:
        """Stop our prompt whether it still waits in ComfyUI's queue or runs.

        Delete first, then interrupt: a prompt pending at the delete never runs, and one running then is
        still running (or done) at the interrupt. The other order lets a prompt start between the two.
        """
        stop_prompt(self.client, self.prompt.prompt_id)


def stop_prompt(client: ComfyClient, prompt_id: str) -> None:
    client.delete_pending(prompt_id)
    client.interrupt(prompt_id)
