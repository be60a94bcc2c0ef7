"""Following one prompt without its events at hand: a retry's look at ComfyUI, silence, a newer attempt."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

import pytest

from dispatcher.comfyui.client import ComfyClient, QueueState
from dispatcher.comfyui.stream import EventHub, Subscription
from dispatcher.errors import ComfyUIUnavailable, LeaseLost
from worker import follow
from worker.follow import STOP_SUPERSEDED, Finished, Prompt, PromptFollower

FAILED = {"status": {"status_str": "error", "completed": False, "messages": []}, "outputs": {}}
DONE = {"status": {"status_str": "success", "completed": True, "messages": []}, "outputs": {"3": {"images": []}}}


class Comfy:
    """What a follower asks of ComfyUI, answered from a prompt's place (queued, or an entry in history)."""

    base_url = "http://comfyui"

    def __init__(self, *, queued: bool = False, entry: dict[str, Any] | None = None) -> None:
        self.queued = queued
        self.entry = entry
        self.calls: list[str] = []

    def queue(self) -> QueueState:
        return QueueState((), ("p",) if self.queued else ())

    def history(self, prompt_id: str) -> dict[str, Any] | None:
        return self.entry

    def delete_history(self, prompt_id: str) -> None:
        self.calls.append("delete_history")
        self.entry = None

    def delete_pending(self, prompt_id: str) -> None:
        self.calls.append("delete_pending")

    def interrupt(self, prompt_id: str | None = None) -> None:
        self.calls.append("interrupt")


class Frames:
    """A subscription that hands out the same frame (or nothing) forever."""

    def __init__(self, frame: dict[str, Any] | None) -> None:
        self.frame = frame

    def get(self, timeout: float) -> dict[str, Any] | None:
        return self.frame


def follower(comfy: Comfy, stop: str | None = None) -> PromptFollower:
    return PromptFollower(
        cast(ComfyClient, comfy),
        cast(EventHub, SimpleNamespace(client_id="worker-a")),
        Prompt("p", {"1": {}}, timeout=60, recover=True),
        on_progress=lambda progress, node: None,
        should_stop=lambda: stop,
    )


def test_a_retry_takes_a_prompt_that_finished_there() -> None:
    found = follower(Comfy(entry=DONE))._find()
    assert isinstance(found, Finished) and found.outputs == DONE["outputs"]


def test_a_retry_follows_a_prompt_still_queued_there() -> None:
    assert follower(Comfy(queued=True))._find() is True


def test_a_retry_clears_an_earlier_attempts_failure_before_posting_again() -> None:
    """Left in /history under the same prompt id, it would pass for the new post's end (or start)."""
    comfy = Comfy(entry=FAILED)
    assert follower(comfy)._find() is False
    assert comfy.calls == ["delete_history"] and comfy.entry is None


def test_other_prompts_status_frames_do_not_hide_that_comfyui_lost_ours(monkeypatch: pytest.MonkeyPatch) -> None:
    """Status frames come for every queue change of a busy ComfyUI; ours never comes: after the silence, look."""
    monkeypatch.setattr(follow, "SILENCE_CHECK_SECONDS", 0.0)
    status = {"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 2}}}}
    with pytest.raises(ComfyUIUnavailable, match="lost it"):
        follower(Comfy())._follow(cast(Subscription, Frames(status)))


def test_a_superseded_attempt_leaves_the_prompt_to_the_newer_one() -> None:
    comfy = Comfy(queued=True)
    with pytest.raises(LeaseLost):
        follower(comfy, stop=STOP_SUPERSEDED)._follow(cast(Subscription, Frames(None)))
    assert comfy.calls == []


def test_a_lost_lease_takes_the_prompt_off_comfyui() -> None:
    comfy = Comfy(queued=True)
    with pytest.raises(LeaseLost):
        follower(comfy, stop="lease lost")._follow(cast(Subscription, Frames(None)))
    assert comfy.calls == ["delete_pending", "interrupt"]
