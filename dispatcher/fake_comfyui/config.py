"""Start-up configuration of the fake, its runtime fault controls and its counters (``/fake/...``)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

DEFAULT_EXCEPTION_TYPE = "RuntimeError"
DEFAULT_EXCEPTION_MESSAGE = "simulated failure (fake ComfyUI fault control)"


@dataclass(frozen=True)
class FakeConfig:
    """How a fake ComfyUI starts.

    ``output_dir`` is the base folder that gets ``output/``, ``input/`` and ``temp/`` (a fresh temp dir,
    removed at shutdown, when ``None``). ``exec_seconds`` is how long each prompt holds the GPU, from
    ``execution_start`` to its end, spread over its nodes (nodes that take longer by themselves, a
    large blur, add to it). The fault fields are the initial values of the ``/fake/control`` settings.

    ``models`` maps a model folder (``loras``, ``vae``...) to the files it holds, replacing that folder's
    default list (only ``checkpoints`` has files by default; see :mod:`dispatcher.fake_comfyui.models`).
    ``model_load_seconds`` is what loading a diffusion model takes: a prompt whose CheckpointLoaderSimple or
    UNETLoader names another model than the one loaded spends that long more in that node.
    """

    exec_seconds: float = 0.0
    output_dir: str | None = None
    host: str = "127.0.0.1"
    port: int = 8188
    fail_node_type: str | None = None
    exception_type: str = DEFAULT_EXCEPTION_TYPE
    exception_message: str = DEFAULT_EXCEPTION_MESSAGE
    hang: bool = False
    drop_ws: bool = False
    reject_next: int = 0
    # Real ComfyUI sends no preview frames unless started with --preview-method; off by default here too.
    previews: bool = False
    models: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    model_load_seconds: float = 0.0


@dataclass
class Controls:
    """Faults and timing that ``POST /fake/control`` changes while the fake runs.

    ``hang``: prompts block at their first node until interrupted or hang is cleared. ``drop_ws``: every
    websocket is closed right after the next ``execution_start`` (then the flag clears itself).
    ``reject_next``: that many next ``POST /prompt`` get a bare 500. ``fail_times``: ``fail_node_type``
    fails only that many more times, then clears itself (0: every time).
    """

    exec_seconds: float = 0.0
    fail_node_type: str | None = None
    fail_times: int = 0
    exception_type: str = DEFAULT_EXCEPTION_TYPE
    exception_message: str = DEFAULT_EXCEPTION_MESSAGE
    hang: bool = False
    drop_ws: bool = False
    reject_next: int = 0
    previews: bool = False
    _changed: asyncio.Event = field(default_factory=asyncio.Event, repr=False, compare=False)

    @classmethod
    def from_config(cls, config: FakeConfig) -> Controls:
        return cls(
            exec_seconds=config.exec_seconds,
            fail_node_type=config.fail_node_type,
            exception_type=config.exception_type,
            exception_message=config.exception_message,
            hang=config.hang,
            drop_ws=config.drop_ws,
            reject_next=config.reject_next,
            previews=config.previews,
        )

    def update(self, changes: Mapping[str, Any]) -> None:
        """Apply a ``/fake/control`` body; raises ValueError naming the first bad key (nothing is applied then)."""
        allowed = self._public()
        checked: dict[str, Any] = {}
        for key, value in changes.items():
            if key not in allowed:
                raise ValueError(f"unknown control {key!r}; known: {sorted(allowed)}")
            checked[key] = _coerce(key, value)
        for key, value in checked.items():
            setattr(self, key, value)
        self.notify()

    def reset(self, config: FakeConfig) -> None:
        """Back to no faults (exec_seconds back to the configured value)."""
        clean = Controls(exec_seconds=config.exec_seconds, previews=config.previews)
        for key in self._public():
            setattr(self, key, getattr(clean, key))
        self.notify()

    def take_failure(self, class_type: str) -> bool:
        """Whether a node of ``class_type`` must fail now (counting down ``fail_times``)."""
        if self.fail_node_type != class_type:
            return False
        if self.fail_times > 0:
            self.fail_times -= 1
            if self.fail_times == 0:
                self.fail_node_type = None
        return True

    def notify(self) -> None:
        """Wake whatever waits in :meth:`wait_changed` (a hung prompt re-checks ``hang``)."""
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_changed(self) -> None:
        await self._changed.wait()

    def as_json(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in self._public()}

    @classmethod
    def _public(cls) -> list[str]:
        # Not dataclasses.asdict: it would deep-copy the asyncio.Event a hung prompt may be waiting on.
        return [f.name for f in fields(cls) if not f.name.startswith("_")]


def _coerce(key: str, value: Any) -> Any:
    if key == "exec_seconds":
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ValueError("exec_seconds must be a number >= 0")
        return float(value)
    if key in ("reject_next", "fail_times"):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{key} must be an integer >= 0")
        return value
    if key in ("hang", "drop_ws", "previews"):
        if not isinstance(value, bool):
            raise ValueError(f"{key} must be true or false")
        return value
    if key == "fail_node_type":
        if value is not None and not isinstance(value, str):
            raise ValueError("fail_node_type must be a class_type or null")
        return value or None
    if not isinstance(value, str) or not value:
        raise ValueError(f"{key} must be a non-empty string")
    return value


@dataclass
class Stats:
    """Counters of ``GET /fake/stats``.

    ``posted`` counts every ``POST /prompt`` request (rejected, invalid or queued); ``queued`` only those
    answered 200; ``started``/``executed`` count prompts that began / ran to success; ``model_loads`` counts
    diffusion models loaded (the first one after start or an unload, then every switch); ``views`` the
    ``GET /view`` requests.
    """

    executed: int = 0
    started: int = 0
    prompts: dict[str, int] = field(default_factory=dict)
    uploads: list[str] = field(default_factory=list)
    posted: int = 0
    queued: int = 0
    failed: int = 0
    interrupted: int = 0
    model_loads: int = 0
    views: int = 0

    def clear(self) -> None:
        for key, value in asdict(Stats()).items():
            setattr(self, key, value)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)
