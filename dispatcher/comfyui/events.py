"""What ComfyUI's websocket events mean for one prompt: a pure state machine.

Feed it every decoded frame; it ignores frames of other prompts, keeps track
of which node runs and how far the prompt has come, and records how it ended.
``finished`` turns true on ``executing`` with ``node: null``, which ComfyUI
sends only after the prompt's history is stored.

It also keeps what the history entry would tell: the UI output of every node
that sent ``executed`` (the same dicts ``/history`` lists under ``outputs``)
and the timestamps of ``execution_start`` and of the end (the same messages
``/history`` lists under ``status``), so a prompt followed from its start needs
no ``/history`` read. A prompt with cached nodes does: their outputs may not
be sent again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Outcome(StrEnum):
    SUCCESS = "success"
    ERROR = "error"
    INTERRUPTED = "interrupted"


@dataclass
class Tracker:
    prompt_id: str
    total_nodes: int
    node: str | None = None
    outcome: Outcome | None = None
    outcome_data: dict[str, Any] = field(default_factory=dict)
    finished: bool = False
    started: bool = False
    start_ms: int | None = None  # ComfyUI's own clock (ms) at execution_start, and at the terminal event
    end_ms: int | None = None
    outputs: dict[str, Any] = field(default_factory=dict)  # node id -> its UI output, as /history's "outputs"
    cached: list[str] = field(default_factory=list)  # nodes ComfyUI served from its cache
    _done: set[str] = field(default_factory=set)
    _fraction: float = 0.0  # of the running node

    @property
    def progress(self) -> float:
        if self.finished and self.outcome is Outcome.SUCCESS:
            return 1.0
        total = max(self.total_nodes, 1)
        running = self._fraction if self.node is not None and self.node not in self._done else 0.0
        return min(1.0, (len(self._done) + running) / total)

    @property
    def outputs_complete(self) -> bool:
        """Whether :attr:`outputs` is the whole of the history's outputs: followed from the start, nothing cached."""
        return self.started and self.finished and self.outcome is Outcome.SUCCESS and not self.cached

    @property
    def gpu_seconds(self) -> float | None:
        """How long ComfyUI executed the prompt, from its own timestamps; None unless both were seen."""
        return execution_seconds(self.start_ms, self.end_ms)

    @property
    def ended(self) -> bool:
        """True once nothing more will happen: finished, or failed/interrupted (history is not needed then)."""
        return self.finished or self.outcome in (Outcome.ERROR, Outcome.INTERRUPTED)

    def feed(self, message: dict[str, Any]) -> bool:
        """Take one frame; True when progress or the running node changed."""
        kind = message.get("type")
        data = message.get("data")
        if not isinstance(data, dict) or data.get("prompt_id") != self.prompt_id:
            return False
        before = (self.progress, self.node)
        if kind == "execution_start":
            self.started = True
            self.start_ms = _stamp(data)
        elif kind == "execution_cached":
            self.cached = [str(n) for n in data.get("nodes") or []]
            self._done.update(self.cached)
        elif kind == "executing":
            node = data.get("node")
            if node is None:
                self.finished = True
                if self.outcome is None:
                    self.outcome = Outcome.SUCCESS
            else:
                if self.node is not None and self.node != str(node):
                    self._done.add(self.node)
                self.node, self._fraction = str(node), 0.0
        elif kind == "progress":
            top = float(data.get("max") or 0.0)
            if top > 0 and str(data.get("node")) == self.node:
                self._fraction = min(1.0, float(data.get("value") or 0.0) / top)
        elif kind == "progress_state":
            self._progress_state(data.get("nodes") or {})
        elif kind == "executed":
            node = str(data.get("node"))
            self._done.add(node)
            if isinstance(data.get("output"), dict):
                self.outputs[node] = data["output"]
        elif kind == "execution_success":
            self.outcome, self.end_ms = Outcome.SUCCESS, _stamp(data)
        elif kind == "execution_error":
            self.outcome, self.outcome_data, self.end_ms = Outcome.ERROR, data, _stamp(data)
        elif kind == "execution_interrupted":
            self.outcome, self.outcome_data, self.end_ms = Outcome.INTERRUPTED, data, _stamp(data)
        return (self.progress, self.node) != before

    def _progress_state(self, nodes: dict[str, Any]) -> None:
        for node_id, state in nodes.items():
            if not isinstance(state, dict):
                continue
            if state.get("state") == "finished":
                self._done.add(str(node_id))
            elif state.get("state") == "running" and str(node_id) == self.node:
                top = float(state.get("max") or 0.0)
                self._fraction = min(1.0, float(state.get("value") or 0.0) / top) if top > 0 else 0.0


END_MESSAGES = ("execution_success", "execution_error", "execution_interrupted")


def _stamp(data: dict[str, Any]) -> int | None:
    value = data.get("timestamp")
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def execution_seconds(start_ms: int | None, end_ms: int | None) -> float | None:
    """Seconds between two of ComfyUI's millisecond timestamps; None if either is missing or they run backwards."""
    if start_ms is None or end_ms is None or end_ms < start_ms:
        return None
    return (end_ms - start_ms) / 1000.0


def history_gpu_seconds(entry: dict[str, Any]) -> float | None:
    """How long ComfyUI executed a prompt, from its history entry's status messages (``execution_start`` to
    ``execution_success``, ``execution_error`` or ``execution_interrupted``)."""
    status = entry.get("status")
    messages = status.get("messages") if isinstance(status, dict) else None
    start = end = None
    for message in messages if isinstance(messages, list) else []:
        if not (isinstance(message, list) and len(message) == 2 and isinstance(message[1], dict)):
            continue
        if message[0] == "execution_start":
            start = _stamp(message[1])
        elif message[0] in END_MESSAGES:
            end = _stamp(message[1])
    return execution_seconds(start, end)
