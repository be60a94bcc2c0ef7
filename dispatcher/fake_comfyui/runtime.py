"""Everything one running fake holds, shared by its routes and its prompt worker."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web

from dispatcher.fake_comfyui.config import Controls, FakeConfig, Stats
from dispatcher.fake_comfyui.executor import Executor
from dispatcher.fake_comfyui.files import Dirs
from dispatcher.fake_comfyui.hub import Hub
from dispatcher.fake_comfyui.models import ModelMemory, model_folders
from dispatcher.fake_comfyui.schemas import Catalog, NodeSchema, build_schemas
from dispatcher.fake_comfyui.state import PromptQueue


class FakeState:
    """Queue, history, websockets, faults and counters of one fake ComfyUI."""

    def __init__(self, config: FakeConfig) -> None:
        if config.model_load_seconds < 0:
            raise ValueError("model_load_seconds must be >= 0")
        self.config = config
        self.models = model_folders(config.models)
        self.memory = ModelMemory(config.model_load_seconds)
        self.dirs = Dirs.create(config.output_dir)
        self.hub = Hub()
        self.queue = PromptQueue(on_change=self.queue_updated)
        self.controls = Controls.from_config(config)
        self.stats = Stats()
        self.executor = Executor(self.queue, self.hub, self.controls, self.stats, self.dirs, self.schemas, self.memory)
        self._number = 0

    def schemas(self) -> Mapping[str, NodeSchema]:
        """Node schemas with the current input files (LoadImage's list changes with uploads) and model files."""
        return build_schemas(Catalog(tuple(self.dirs.input_images()), self.models))

    def queue_info(self) -> dict[str, Any]:
        return {"exec_info": {"queue_remaining": self.queue.remaining()}}

    def queue_updated(self) -> None:
        self.hub.send("status", {"status": self.queue_info()})

    def next_number(self, front: Any) -> int:
        """ComfyUI numbers every posted prompt, valid or not; ``front`` posts jump the queue (negative)."""
        number = self._number
        self._number += 1
        return -number if front else number

    def reset(self) -> None:
        """``/fake/reset``: no history, zeroed counters, no faults, no model loaded (pending prompts stay queued)."""
        self.memory.unload()
        self.queue.wipe_history()
        self.stats.clear()
        self.controls.reset(self.config)


STATE = web.AppKey("fake_comfyui_state", FakeState)
