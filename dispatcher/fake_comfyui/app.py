"""Build, serve, or run in a background thread, one fake ComfyUI."""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import AsyncIterator, Mapping
from types import TracebackType

from aiohttp import web

from dispatcher.fake_comfyui.config import DEFAULT_EXCEPTION_MESSAGE, DEFAULT_EXCEPTION_TYPE, FakeConfig
from dispatcher.fake_comfyui.runtime import STATE, FakeState
from dispatcher.fake_comfyui.server import add_routes, not_json_is_500, web_max_upload

log = logging.getLogger(__name__)


def create_app(config: FakeConfig) -> web.Application:
    """The aiohttp application of a fake ComfyUI; its folders are removed when the app is cleaned up.

    ``app[STATE]`` (:class:`FakeState`) exposes the folders, queue and controls to in-process tests.
    """
    app = web.Application(client_max_size=web_max_upload(), middlewares=[not_json_is_500])
    app[STATE] = FakeState(config)
    add_routes(app)
    app.cleanup_ctx.append(_workers)
    app.on_shutdown.append(_close_websockets)
    return app


async def _workers(app: web.Application) -> AsyncIterator[None]:
    state = app[STATE]
    tasks = [asyncio.create_task(state.hub.publish()), asyncio.create_task(state.executor.run())]
    yield
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    state.dirs.cleanup()


async def _close_websockets(app: web.Application) -> None:
    await app[STATE].hub.shutdown()


async def _start(config: FakeConfig) -> tuple[web.AppRunner, str]:
    app = create_app(config)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port)
    await site.start()
    # With port 0 the OS picked one: report the real address.
    port = runner.addresses[0][1]
    return runner, f"http://{config.host}:{port}"


async def _serve_until_signalled(config: FakeConfig) -> None:
    runner, url = await _start(config)
    log.info("fake ComfyUI listening on %s", url)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        log.info("fake ComfyUI stopping")
        await runner.cleanup()


def serve(
    host: str,
    port: int,
    *,
    exec_seconds: float = 0.0,
    output_dir: str | None = None,
    fail_node_type: str | None = None,
    exception_type: str = DEFAULT_EXCEPTION_TYPE,
    exception_message: str = DEFAULT_EXCEPTION_MESSAGE,
    hang: bool = False,
    drop_ws: bool = False,
    reject_next: int = 0,
    previews: bool = False,
    models: Mapping[str, tuple[str, ...]] | None = None,
    model_load_seconds: float = 0.0,
) -> None:
    """Serve a fake ComfyUI on ``host:port`` until SIGINT or SIGTERM (blocking)."""
    config = FakeConfig(
        exec_seconds=exec_seconds,
        output_dir=output_dir,
        host=host,
        port=port,
        fail_node_type=fail_node_type,
        exception_type=exception_type,
        exception_message=exception_message,
        hang=hang,
        drop_ws=drop_ws,
        reject_next=reject_next,
        previews=previews,
        models=models or {},
        model_load_seconds=model_load_seconds,
    )
    asyncio.run(_serve_until_signalled(config))


class BackgroundFake:
    """A fake ComfyUI on its own event loop in a daemon thread, for in-process tests.

    ``with BackgroundFake(FakeConfig(port=0)) as fake: requests.get(fake.url + "/prompt")``
    """

    def __init__(self, config: FakeConfig | None = None) -> None:
        self.config = config or FakeConfig(port=0)
        self.url = ""
        self.state: FakeState | None = None
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, name="fake-comfyui", daemon=True)

    def start(self) -> BackgroundFake:
        self._thread.start()
        self._runner, self.url = asyncio.run_coroutine_threadsafe(_start(self.config), self._loop).result(30)
        self.state = self._runner.app[STATE]
        return self

    @property
    def ws_url(self) -> str:
        return "ws" + self.url[len("http") :] + "/ws"

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._shutdown(self._runner), self._loop).result(30)
            self._runner = None
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        self._loop.close()

    @staticmethod
    async def _shutdown(runner: web.AppRunner) -> None:
        await runner.cleanup()
        # Leave nothing pending on the loop (websocket closers, file writes) before it is closed.
        current = asyncio.current_task()
        leftovers = [task for task in asyncio.all_tasks() if task is not current]
        for task in leftovers:
            task.cancel()
        await asyncio.gather(*leftovers, return_exceptions=True)
        await asyncio.get_running_loop().shutdown_default_executor()

    def __enter__(self) -> BackgroundFake:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
