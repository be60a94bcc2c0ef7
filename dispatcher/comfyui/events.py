"""What ComfyUI's websocket events mean for one prompt: a pure state machine.

Feed it every decoded frame; it ignores frames of other prompts, keeps track
of which node runs and how far the prompt has come, and records how it ended.
``finished`` turns true on ``executing`` with ``node: null``, which ComfyUI
sends only after the prompt's history is stored.
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
        elif kind == "execution_cached":
            self._done.update(str(n) for n in data.get("nodes") or [])
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
            self._done.add(str(data.get("node")))
        elif kind == "execution_success":
            self.outcome = Outcome.SUCCESS
        elif kind == "execution_error":
            self.outcome, self.outcome_data = Outcome.ERROR, data
        elif kind == "execution_interrupted":
            self.outcome, self.outcome_data = Outcome.INTERRUPTED, data
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
