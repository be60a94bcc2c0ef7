"""A worker giving a run back (it stops, or the run moves to an idle worker) never gives back one that ran."""

from __future__ import annotations

from typing import Any, cast

import pytest

from dispatcher.comfyui.client import ComfyClient, QueueState
from dispatcher.comfyui.stream import EventHub
from dispatcher.errors import RunReleased
from worker.follow import Prompt, PromptFollower


class Comfy:
    """ComfyUI as /queue and /history see one prompt: pending, running, done, or gone."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.deleted: list[str] = []

    def delete_pending(self, prompt_id: str) -> None:
        self.deleted.append(prompt_id)
        if self.where == "pending":
            self.where = "gone"

    def queue(self) -> QueueState:
        return QueueState(("p",) if self.where == "running" else (), ("p",) if self.where == "pending" else ())

    def history(self, prompt_id: str) -> dict[str, Any] | None:
        return {"status": {"completed": True}, "outputs": {}} if self.where == "done" else None


def follower(comfy: Comfy) -> PromptFollower:
    return PromptFollower(
        cast(ComfyClient, comfy),
        cast(EventHub, None),
        Prompt("p", {}, timeout=60, recover=False),
        on_progress=lambda progress, node: None,
        should_stop=lambda: None,
    )


def test_a_prompt_still_waiting_is_deleted_and_given_back() -> None:
    comfy = Comfy("pending")
    with pytest.raises(RunReleased):
        follower(comfy)._release()
    assert comfy.deleted == ["p"]


@pytest.mark.parametrize("where", ["running", "done"])
def test_a_prompt_that_started_or_ended_before_its_frames_were_read_is_kept(where: str) -> None:
    """The delete comes too late: it runs (or ran) on this ComfyUI, so it is finished here, never run twice."""
    comfy = Comfy(where)
    run = follower(comfy)
    run._release()  # no RunReleased
    assert run.started_at is not None


def test_a_prompt_known_to_have_started_is_not_even_asked_about() -> None:
    comfy = Comfy("running")
    run = follower(comfy)
    run._begin()
    run._release()
    assert comfy.deleted == []
