"""Runs queued prompts one at a time and emits ComfyUI 0.3.64's websocket events in its order.

Per prompt: ``execution_start``, ``execution_cached`` (always ``[]``: the fake never caches), then per
node ``progress_state`` (running), ``executing``, ``progress``..., ``executed`` (output nodes),
``progress_state`` (finished); then ``execution_success`` / ``execution_error`` /
``execution_interrupted``. History is stored next (which broadcasts ``status``), and last comes
``executing`` with ``node: null``. Events go to the prompt's ``client_id`` socket; ``progress``,
``progress_state`` and ``execution_interrupted`` go to every socket when the prompt has no ``client_id``
(``status`` always goes to every socket).
"""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
from collections.abc import Callable, Mapping
from typing import Any

from dispatcher.fake_comfyui.config import Controls, Stats
from dispatcher.fake_comfyui.failures import OOM_TYPE, Interrupted, NodeFailure, injected
from dispatcher.fake_comfyui.files import Dirs
from dispatcher.fake_comfyui.graph import execution_order, full_type_name, is_link
from dispatcher.fake_comfyui.hub import Hub
from dispatcher.fake_comfyui.media_nodes import MEDIA_FUNCTIONS
from dispatcher.fake_comfyui.models import ModelMemory
from dispatcher.fake_comfyui.nodes import NODE_FUNCTIONS, NodeContext
from dispatcher.fake_comfyui.png import encode_solid_png
from dispatcher.fake_comfyui.schemas import NodeSchema
from dispatcher.fake_comfyui.state import PromptQueue, QueueItem
from dispatcher.fake_comfyui.values import Image, format_value, to_rgb8

log = logging.getLogger(__name__)


def _now_ms() -> int:
    return int(time.time() * 1000)


class Executor:
    """The single prompt worker of one fake server."""

    def __init__(
        self,
        queue: PromptQueue,
        hub: Hub,
        controls: Controls,
        stats: Stats,
        dirs: Dirs,
        schemas: Callable[[], Mapping[str, NodeSchema]],
        memory: ModelMemory,
    ) -> None:
        self.queue = queue
        self.hub = hub
        self.controls = controls
        self.stats = stats
        self.dirs = dirs
        self.schemas = schemas
        self.memory = memory
        self.interrupt_flag = asyncio.Event()
        self.current: QueueItem | None = None

    def interrupt(self, prompt_id: str | None = None) -> None:
        """Stop the running prompt; with ``prompt_id``, only if that is the one running.

        Like ComfyUI's global flag, an interrupt while idle is forgotten when the next prompt starts.
        """
        if prompt_id and (self.current is None or self.current.prompt_id != prompt_id):
            log.info("prompt %s is not running, interrupt ignored", prompt_id)
            return
        self.interrupt_flag.set()

    async def run(self) -> None:
        """Take prompts off the queue forever."""
        while True:
            item_id, item = await self.queue.get()
            self.current = item
            try:
                await self._execute(item_id, item)
            except Exception:  # loop boundary: a bug in one prompt must not stop the fake serving the rest
                log.exception("executor failed on prompt %s", item.prompt_id)
                if self.queue.is_running(item_id):
                    status = {"status_str": "error", "completed": False, "messages": []}
                    self.queue.task_done(item_id, {"outputs": {}, "meta": {}}, status)
            finally:
                self.current = None
                self.memory.prompt_done()

    async def _execute(self, item_id: int, item: QueueItem) -> None:
        self.interrupt_flag.clear()
        client_id = item.extra_data.get("client_id")
        self.hub.client_id = client_id
        self.stats.started += 1
        self.stats.prompts[item.prompt_id] = self.stats.prompts.get(item.prompt_id, 0) + 1
        run = _PromptRun(self, item, client_id)
        outcome = await run.execute()
        self.hub.last_node_id = None
        success = outcome == "success"
        if success:
            self.stats.executed += 1
        elif outcome == "interrupted":
            self.stats.interrupted += 1
        else:
            self.stats.failed += 1
        status = {"status_str": "success" if success else "error", "completed": success, "messages": run.messages}
        self.queue.task_done(item_id, run.history_result(), status)
        if client_id is not None:
            self.hub.send("executing", {"node": None, "prompt_id": item.prompt_id}, client_id)

    def request_unload(self) -> None:
        """``POST /free`` with ``unload_models`` (or ``free_memory``): now if idle, else once the prompt ends."""
        self.memory.request_unload(busy=self.current is not None)

    async def load_model(self, name: str) -> float:
        """Make ``name`` the loaded diffusion model; returns the seconds its load took (0 if already loaded)."""
        if self.memory.loaded == name:
            return 0.0
        log.info("loading model %s (%.3f s)", name, self.memory.load_seconds)
        self.stats.model_loads += 1
        began = time.monotonic()
        # Not interruptible: ComfyUI checks its interrupt flag around nodes and in sampler steps, not while a
        # model loads, so an interrupt during a load ends the prompt once the load is done (the model loaded).
        await asyncio.sleep(self.memory.load_seconds)
        self.memory.loaded = name
        return time.monotonic() - began

    async def work(self, seconds: float) -> None:
        """Simulated compute that ``/interrupt`` cuts short (raises :class:`Interrupted`)."""
        if seconds <= 0:
            self.check_interrupt()
            await asyncio.sleep(0)  # a yield, not a delay: lets HTTP handlers run between steps
            return
        try:
            await asyncio.wait_for(self.interrupt_flag.wait(), timeout=seconds)
        except TimeoutError:
            return
        raise Interrupted()

    def check_interrupt(self) -> None:
        if self.interrupt_flag.is_set():
            raise Interrupted()

    async def hang(self) -> None:
        """Block while the ``hang`` control is on, until interrupted or the control changes."""
        while self.controls.hang:
            self.check_interrupt()
            waiters = [
                asyncio.ensure_future(self.interrupt_flag.wait()),
                asyncio.ensure_future(self.controls.wait_changed()),
            ]
            try:
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()
        self.check_interrupt()


class _PromptRun:
    """State of one prompt's execution: status messages, node progress, outputs and UI results."""

    def __init__(self, executor: Executor, item: QueueItem, client_id: str | None) -> None:
        self.ex = executor
        self.item = item
        self.prompt_id = item.prompt_id
        self.client_id = client_id
        self.schemas = executor.schemas()
        self.messages: list[list[Any]] = []
        self.progress_nodes: dict[str, dict[str, Any]] = {}
        self.outputs: dict[str, tuple[Any, ...]] = {}
        self.ui: dict[str, dict[str, Any]] = {}
        self.executed: list[str] = []
        self.current_inputs: dict[str, Any] = {}
        # Where the prompt's exec_seconds schedule starts; a model load pushes it back by the load's time.
        self.origin = 0.0

    def add_message(self, event: str, data: dict[str, Any], broadcast: bool) -> None:
        data = {**data, "timestamp": _now_ms()}
        self.messages.append([event, data])
        if self.client_id is not None or broadcast:
            self.ex.hub.send(event, data, self.client_id)

    async def execute(self) -> str:
        """Run every needed node; returns ``success``, ``failed`` or ``interrupted``."""
        prompt = self.item.prompt
        self.add_message("execution_start", {"prompt_id": self.prompt_id}, broadcast=False)
        if self.ex.controls.drop_ws:
            self.ex.controls.drop_ws = False
            self.ex.hub.close_all()
        self.add_message("execution_cached", {"nodes": [], "prompt_id": self.prompt_id}, broadcast=False)
        order = execution_order(prompt, self.schemas, self.item.outputs)
        # The prompt holds the GPU exec_seconds in all: node i ends once its share of that time since the start
        # has passed, so what the nodes cost by themselves is absorbed (unless it is more: a large blur).
        # Loading a model is not absorbed: it comes on top, as a real load adds to a prompt's time.
        self.origin, total = time.monotonic(), self.ex.controls.exec_seconds
        for index, node_id in enumerate(order):
            class_type = prompt[node_id]["class_type"]
            share_end = total * (index + 1) / len(order)
            try:
                await self._run_node(node_id, class_type, share_end)
            except Interrupted:
                log.info("prompt %s interrupted at node %s", self.prompt_id, node_id)
                data = {
                    "prompt_id": self.prompt_id,
                    "node_id": node_id,
                    "node_type": class_type,
                    "executed": list(self.executed),
                }
                self.add_message("execution_interrupted", data, broadcast=True)
                return "interrupted"
            except NodeFailure as failure:
                if failure.exception_type == OOM_TYPE:
                    log.info("out of memory: unloading models, as ComfyUI does")
                    self.ex.memory.unload()
                self._report_error(
                    node_id, class_type, failure.exception_type, failure.exception_message, failure.traceback
                )
                return "failed"
            except Exception as exc:  # loop boundary: whatever a node raises becomes execution_error, as in ComfyUI
                log.exception("simulated node %s (%s) raised", node_id, class_type)
                self._report_error(
                    node_id, class_type, full_type_name(type(exc)), f"{exc}\n", traceback.format_tb(exc.__traceback__)
                )
                return "failed"
        self.add_message("execution_success", {"prompt_id": self.prompt_id}, broadcast=False)
        return "success"

    def _report_error(self, node_id: str, class_type: str, kind: str, message: str, frames: list[str]) -> None:
        log.warning("prompt %s failed at node %s (%s): %s: %s", self.prompt_id, node_id, class_type, kind, message)
        data = {
            "prompt_id": self.prompt_id,
            "node_id": node_id,
            "node_type": class_type,
            "executed": list(self.executed),
            "exception_message": message,
            "exception_type": kind,
            "traceback": frames,
            "current_inputs": {name: [format_value(value)] for name, value in self.current_inputs.items()},
            # ComfyUI lists the ids its output cache knows, i.e. every node of the prompt (set order).
            "current_outputs": list(reversed(self.item.prompt)),
        }
        self.add_message("execution_error", data, broadcast=False)

    async def _run_node(self, node_id: str, class_type: str, share_end: float) -> None:
        schema = self.schemas[class_type]
        self.current_inputs = {}
        self._progress_start(node_id)
        self.current_inputs = inputs = self._gather(node_id, schema)
        if self.client_id is not None:
            self.ex.hub.last_node_id = node_id
            self.ex.hub.send(
                "executing", {"node": node_id, "display_node": node_id, "prompt_id": self.prompt_id}, self.client_id
            )
        self.ex.check_interrupt()  # ComfyUI checks the flag as a node starts
        await self.ex.hang()
        controls = self.ex.controls
        function_name, function = NODE_FUNCTIONS.get(class_type) or MEDIA_FUNCTIONS[class_type]
        if controls.take_failure(class_type):
            raise injected(class_type, function_name, controls.exception_type, controls.exception_message)
        context = NodeContext(
            node_id,
            self.prompt_id,
            self.ex.dirs,
            controls.previews,
            self.ex.work,
            self._progress_hook(node_id),
            self._load_model,
        )
        result = await function(context, inputs)
        # The node's share of exec_seconds, less what its own work took: a prompt holds the GPU that long
        # however busy this machine's CPU is (a real GPU's time does not stretch when the host is loaded).
        await self.ex.work(self.origin + share_end - time.monotonic())
        if result.ui is not None:
            meta = {"node_id": node_id, "display_node": node_id, "parent_node": None, "real_node_id": node_id}
            self.ui[node_id] = {"meta": meta, "output": result.ui}
            if self.client_id is not None:
                self.ex.hub.send(
                    "executed",
                    {"node": node_id, "display_node": node_id, "output": result.ui, "prompt_id": self.prompt_id},
                    self.client_id,
                )
        self.outputs[node_id] = result.outputs
        self._progress_finish(node_id)
        self.executed.append(node_id)

    async def _load_model(self, name: str) -> None:
        self.origin += await self.ex.load_model(name)

    def _gather(self, node_id: str, schema: NodeSchema) -> dict[str, Any]:
        """The node's arguments: linked outputs, constants of declared inputs, then hidden values."""
        args: dict[str, Any] = {}
        given = self.item.prompt[node_id].get("inputs")
        for name, value in (given if isinstance(given, dict) else {}).items():
            found = schema.input_info(name)
            if is_link(value):
                source = self.outputs.get(value[0])
                args[name] = source[int(value[1])] if source is not None and int(value[1]) < len(source) else None
            elif found is not None:
                args[name] = value
        for name, kind in schema.inputs.get("hidden", {}).items():
            hidden = {
                "PROMPT": self.item.prompt,
                "EXTRA_PNGINFO": self.item.extra_data.get("extra_pnginfo"),
                "UNIQUE_ID": node_id,
            }
            args[name] = hidden.get(kind)
        return args

    def _send_progress_state(self) -> None:
        nodes = {
            node_id: {
                **state,
                "node_id": node_id,
                "prompt_id": self.prompt_id,
                "display_node_id": node_id,
                "parent_node_id": None,
                "real_node_id": node_id,
            }
            for node_id, state in self.progress_nodes.items()
        }
        self.ex.hub.send("progress_state", {"prompt_id": self.prompt_id, "nodes": nodes}, self.client_id)

    def _progress_start(self, node_id: str) -> None:
        self.progress_nodes[node_id] = {"value": 0.0, "max": 1.0, "state": "running"}
        self._send_progress_state()

    def _progress_finish(self, node_id: str) -> None:
        state = self.progress_nodes[node_id]
        state.update(state="finished", value=state["max"])
        self._send_progress_state()

    def _progress_hook(self, node_id: str) -> Callable[[float, float, Image | None], Any]:
        async def hook(value: float, total: float, preview: Image | None) -> None:
            self.ex.check_interrupt()
            self.progress_nodes[node_id].update(state="running", value=value, max=total)
            self._send_progress_state()
            progress = {"value": value, "max": total, "prompt_id": self.prompt_id, "node": node_id}
            self.ex.hub.send("progress", progress, self.client_id)
            if preview is not None:
                png = encode_solid_png(preview.width, preview.height, to_rgb8(preview.colors[0]), compress_level=1)
                self.ex.hub.send_preview_png(png, self.client_id)

        return hook

    def history_result(self) -> dict[str, Any]:
        """``outputs`` and ``meta`` of the output nodes that ran (also after an error), in prompt order."""
        ran = [node_id for node_id in self.item.prompt if node_id in self.ui]
        return {"outputs": {n: self.ui[n]["output"] for n in ran}, "meta": {n: self.ui[n]["meta"] for n in ran}}
