"""A faithful fake ComfyUI 0.3.64 server (aiohttp) for tests, demos and benchmarks.

It speaks ComfyUI's HTTP and websocket protocol with the shapes recorded in
``tests/fixtures/transcripts`` and runs simulated nodes that write real PNG files. Extra routes under
``/fake/`` report counters and inject faults (see :mod:`dispatcher.fake_comfyui.config`).

- :func:`serve` blocks serving one fake (the CLI's ``comfy-dispatch fake-comfyui``);
- :func:`create_app` builds the aiohttp application from a :class:`FakeConfig`;
- :class:`BackgroundFake` runs one in a thread of the current process.
"""

from dispatcher.fake_comfyui.app import BackgroundFake, create_app, serve
from dispatcher.fake_comfyui.config import FakeConfig

__all__ = ["BackgroundFake", "FakeConfig", "create_app", "serve"]
