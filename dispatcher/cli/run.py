"""``comfy-dispatch run WORKFLOW -p name=value ...``: submit one run through the API, and with ``--wait`` (or
``--out``) follow it to its end and download its outputs.

Prints the run id (and the files downloaded) on stdout, or with ``--json`` the run as the API shows it;
progress goes to stderr, only on a terminal. Exit 0 when the run succeeded (or was queued, without
``--wait``), 1 when it failed or was canceled, 2 for a usage error (a bad -p, an unknown workflow,
a bad key).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from dispatcher.cli.batchfile import parse_params
from dispatcher.cli.common import die
from dispatcher.cli.progress import RunProgress

if TYPE_CHECKING:
    from comfy_dispatch_client import Client, Run

ApiUrlOpt = Annotated[str | None, typer.Option("--api-url", help="the API's URL; default: COMFY_DISPATCH_API_URL")]
ApiKeyOpt = Annotated[
    str | None, typer.Option("--api-key", help="an API key; default: COMFY_DISPATCH_API_KEY", show_default=False)
]
PRIORITIES = ("high", "normal", "low")


def run_command(
    workflow: Annotated[str, typer.Argument(help="the workflow id (GET /v1/workflows)")],
    param: Annotated[
        list[str] | None,
        typer.Option("-p", "--param", help="name=value; the value is JSON when it parses (7, true), else text"),
    ] = None,
    priority: Annotated[str | None, typer.Option(help="high, normal or low")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="wait for the run to end")] = False,
    out: Annotated[Path | None, typer.Option("--out", help="download the outputs to this folder (with --wait)")] = None,
    timeout: Annotated[float | None, typer.Option(help="seconds to wait at most (default: no limit)")] = None,
    idempotency_key: Annotated[
        str | None, typer.Option("--idempotency-key", help="send again with the same key: no second run")
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="print the run as JSON")] = False,
    version: Annotated[
        int | None,
        typer.Option("--workflow-version", min=1, help="run this version of the workflow (default: the latest)"),
    ] = None,
    api_url: ApiUrlOpt = None,
    api_key: ApiKeyOpt = None,
) -> None:
    """Submit a run of WORKFLOW; with --wait, follow it to its end; with --out, download its outputs."""
    try:
        params = parse_params(param or [])
    except ValueError as exc:
        raise die(str(exc)) from None
    if priority is not None and priority not in PRIORITIES:
        raise die(f"--priority must be one of {', '.join(PRIORITIES)}, not {priority!r}")
    if timeout is not None and timeout <= 0:
        raise die("--timeout must be > 0")
    from comfy_dispatch_client import RunStatus, WaitTimeout
    from dispatcher.cli.remote import api_errors, connect

    files: list[Path] = []
    with connect(api_url, api_key) as client, api_errors(f"run of {workflow}"):
        options = {"version": version} if version is not None else {}
        run = client.submit(workflow, params, priority=priority, idempotency_key=idempotency_key, **options)
        if wait or out is not None:
            try:
                run = follow(client, run, timeout=timeout, progress=RunProgress(run.id, enabled=sys.stderr.isatty()))
            except WaitTimeout as exc:
                typer.echo(f"comfy-dispatch: {exc}", err=True)
                _print(exc.run, files, json_output)
                raise typer.Exit(1) from None
            except KeyboardInterrupt:
                typer.echo(f"comfy-dispatch: interrupted; run {run.id} goes on", err=True)
                raise typer.Exit(130) from None
            if out is not None and run.status is RunStatus.SUCCEEDED:
                files = client.download(run, out)
    _print(run, files, json_output)
    if run.ended and not run.succeeded:
        message = (run.error or {}).get("message") or (run.error or {}).get("detail") or ""
        typer.echo(f"comfy-dispatch: run {run.id} {run.status.value}" + (f": {message}" if message else ""), err=True)
        raise typer.Exit(1)


def follow(client: Client, run: Run, *, timeout: float | None, progress: RunProgress) -> Run:
    """The run once it has ended: its events drive the progress bar on a terminal (with no timeout), else long
    polls wait for it; WaitTimeout past ``timeout`` seconds."""
    if run.ended:
        return run
    try:
        if progress.enabled and timeout is None:
            for event in client.events(run.id):
                status = {"started": "running", "progress": "running"}.get(event.type, event.type)
                value = 1.0 if event.type == "done" else event.data.get("progress")
                progress.update(status=status, progress=value if isinstance(value, int | float) else None)
        return client.wait(run.id, timeout)
    finally:
        progress.close()


def _print(run: Run, files: list[Path], as_json: bool) -> None:
    if as_json:
        view: dict[str, Any] = dict(run.raw)
        if files:
            view["files"] = [str(path) for path in files]
        typer.echo(json.dumps(view, indent=2))
        return
    typer.echo(run.id)
    for path in files:
        typer.echo(str(path))
