"""The ``comfy-dispatch`` command: one entry point for every process.

Each command reads the same settings (``COMFY_DISPATCH_*``); flags override
them. A bad setting or bad input ends with a one-line message and exit 2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from dispatcher.cli.admin import keys_app, tenants_app
from dispatcher.cli.batch import batch_command
from dispatcher.cli.common import die, redis_reachable
from dispatcher.cli.ops import dead_letter_app
from dispatcher.cli.run import run_command
from dispatcher.cli.workflows import workflows_app
from dispatcher.errors import DispatchError, WorkerNameTaken
from dispatcher.logs import setup_logging
from dispatcher.settings import Settings, load_settings

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Comfy Dispatch: run ComfyUI workflows at scale.",
)
app.add_typer(tenants_app, name="tenants")
app.add_typer(keys_app, name="keys")
app.add_typer(dead_letter_app, name="dead-letter")
app.add_typer(workflows_app, name="workflows")

RedisOpt = Annotated[str | None, typer.Option("--redis-url", help="overrides COMFY_DISPATCH_REDIS_URL")]
OutputOpt = Annotated[Path | None, typer.Option("--output-dir", help="overrides COMFY_DISPATCH_OUTPUT_DIR")]
WorkflowsOpt = Annotated[Path | None, typer.Option("--workflows-dir", help="overrides COMFY_DISPATCH_WORKFLOWS_DIR")]
LogOpt = Annotated[str | None, typer.Option("--log-level", help="overrides COMFY_DISPATCH_LOG_LEVEL")]
MetricsPortOpt = Annotated[
    int | None, typer.Option("--metrics-port", help="serve Prometheus metrics on this port (default: none)")
]
MetricsHostOpt = Annotated[str, typer.Option("--metrics-host", help="address the metrics port listens on")]
# Metrics name no run and no secret; a scraper in another container must reach them.
METRICS_HOST = "0.0.0.0"


def _settings(**overrides: Any) -> Settings:
    try:
        return load_settings(**overrides)
    except DispatchError as exc:
        raise die(f"invalid setting {exc}") from None


def _serve_metrics(port: int | None, host: str) -> None:
    """Start this process's /metrics server if a port was given (a daemon thread, gone with the process)."""
    if port is None:
        return
    if not 0 < port < 65536:
        raise die(f"--metrics-port must be in 1-65535, not {port}")
    from dispatcher import metrics

    try:
        metrics.serve(port, host)
    except OSError as exc:
        raise die(f"cannot serve metrics on {host}:{port}: {exc}") from None


@app.command()
def api(
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 8000,
    redis_url: RedisOpt = None,
    output_dir: OutputOpt = None,
    workflows_dir: WorkflowsOpt = None,
    log_level: LogOpt = None,
) -> None:
    """Serve the HTTP submission API."""
    settings = _settings(redis_url=redis_url, output_dir=output_dir, workflows_dir=workflows_dir, log_level=log_level)
    setup_logging(settings.log_level, "api")
    from api.app import serve

    try:
        serve(settings, host, port)
    except DispatchError as exc:
        raise die(str(exc)) from None


@app.command()
def worker(
    comfyui_url: Annotated[str | None, typer.Option("--comfyui-url", help="the ComfyUI this worker drives")] = None,
    name: Annotated[str | None, typer.Option(help="worker name (default: host and ComfyUI port)")] = None,
    burst: Annotated[bool, typer.Option(help="exit when the queue is empty")] = False,
    pipeline_depth: Annotated[
        int | None, typer.Option(help="runs held at once, posted behind the one executing (1: one at a time)")
    ] = None,
    comfyui_output_dir: Annotated[
        Path | None,
        typer.Option(
            "--comfyui-output-dir",
            help="ComfyUI's output folder, on this host: outputs are read from it, not downloaded over /view",
        ),
    ] = None,
    redis_url: RedisOpt = None,
    output_dir: OutputOpt = None,
    log_level: LogOpt = None,
    metrics_port: MetricsPortOpt = None,
    metrics_host: MetricsHostOpt = METRICS_HOST,
) -> None:
    """Run one worker bound to one ComfyUI."""
    settings = _settings(
        comfyui_url=comfyui_url,
        redis_url=redis_url,
        output_dir=output_dir,
        log_level=log_level,
        pipeline_depth=pipeline_depth,
        comfyui_output_dir=comfyui_output_dir,
    )
    setup_logging(settings.log_level, "worker")
    _serve_metrics(metrics_port, metrics_host)
    from worker.main import run_worker

    with redis_reachable(settings.redis_url):
        try:
            run_worker(settings, name, burst=burst)
        except WorkerNameTaken as exc:
            raise die(str(exc)) from None


@app.command()
def scheduler(
    redis_url: RedisOpt = None,
    log_level: LogOpt = None,
    metrics_port: MetricsPortOpt = None,
    metrics_host: MetricsHostOpt = METRICS_HOST,
) -> None:
    """Dispatch queued runs to workers: priority, fairness, limits, retries, and dead-worker recovery."""
    settings = _settings(redis_url=redis_url, log_level=log_level)
    setup_logging(settings.log_level, "scheduler")
    _serve_metrics(metrics_port, metrics_host)
    import signal

    from dispatcher.connections import Connections
    from dispatcher.scheduling.scheduler import Scheduler

    conns = Connections.from_url(settings.redis_url)
    sched = Scheduler(settings, conns)
    signal.signal(signal.SIGTERM, lambda *_: sched.stopping.set())
    signal.signal(signal.SIGINT, lambda *_: sched.stopping.set())
    try:
        with redis_reachable(settings.redis_url):
            sched.run()
    finally:
        conns.close()


@app.command()
def webhooks(
    name: Annotated[str | None, typer.Option(help="worker and relay name (default: host and pid)")] = None,
    redis_url: RedisOpt = None,
    log_level: LogOpt = None,
    metrics_port: MetricsPortOpt = None,
    metrics_host: MetricsHostOpt = METRICS_HOST,
) -> None:
    """Deliver the callbacks (webhooks) of runs: relay their events, sign, send, retry, record every attempt."""
    settings = _settings(redis_url=redis_url, log_level=log_level)
    setup_logging(settings.log_level, "webhooks")
    _serve_metrics(metrics_port, metrics_host)
    from dispatcher.webhooks.main import run_webhooks

    with redis_reachable(settings.redis_url):
        run_webhooks(settings, name=name)


@app.command("fake-comfyui")
def fake_comfyui(
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 8188,
    exec_seconds: Annotated[float, typer.Option(help="simulated work per prompt, in seconds")] = 0.0,
    data_dir: Annotated[
        Path | None, typer.Option(help="folder for output/, input/, temp/ (default: a temp dir)")
    ] = None,
    models: Annotated[
        list[str] | None,
        typer.Option(
            "--models",
            metavar="FOLDER=FILE[,FILE...]",
            help="model files the fake holds in a folder (checkpoints, loras, vae, diffusion_models...), replacing "
            "its default list; repeat for other folders",
        ),
    ] = None,
    model_load_seconds: Annotated[
        float, typer.Option(help="time to load a checkpoint or diffusion model other than the one loaded")
    ] = 0.0,
    log_level: LogOpt = None,
) -> None:
    """Serve the project's fake ComfyUI (for tests, demos and benchmarks)."""
    settings = _settings(log_level=log_level)
    setup_logging(settings.log_level, "fake-comfyui")
    if exec_seconds < 0:
        raise die("--exec-seconds must be >= 0")
    if model_load_seconds < 0:
        raise die("--model-load-seconds must be >= 0")
    from dispatcher.fake_comfyui import serve
    from dispatcher.fake_comfyui.models import parse_models_option

    try:
        folders = parse_models_option(models or [])
    except ValueError as exc:
        raise die(str(exc)) from None
    serve(
        host,
        port,
        exec_seconds=exec_seconds,
        output_dir=str(data_dir) if data_dir else None,
        models=folders,
        model_load_seconds=model_load_seconds,
    )


@app.command()
def up(
    api_port: Annotated[int, typer.Option(help="port of the API")] = 8000,
    demo: Annotated[bool, typer.Option(help="submit demo runs once the stack is up")] = True,
    exit_after_demo: Annotated[bool, typer.Option(help="stop everything after the demo")] = False,
    log_level: LogOpt = None,
) -> None:
    """Start Redis, ComfyUI (or the fake), the API and one worker per ComfyUI; run a demo; serve until Ctrl-C."""
    settings = _settings(log_level=log_level)
    setup_logging(settings.log_level, "up")
    from dispatcher.stack import Stack

    try:
        code = Stack(settings, api_port=api_port).run(demo=demo, exit_after_demo=exit_after_demo)
    except DispatchError as exc:
        raise die(str(exc)) from None
    raise typer.Exit(code)


# Clients of the API (through the comfy_dispatch_client package, which they import only when they run).
app.command("run")(run_command)
app.command("batch")(batch_command)


def main() -> None:
    app(prog_name="comfy-dispatch")


if __name__ == "__main__":
    main()
