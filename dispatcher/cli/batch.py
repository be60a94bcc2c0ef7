"""``comfy-dispatch batch runs.jsonl --out results.jsonl``: submit a file of runs, and write each line's result
as it ends; killed and started again with the same arguments, it makes no run twice and loses no result.

The input has one run per line (``{"workflow", "params", "priority"?, "idempotency_key"?}``); a line that
is no run (not JSON, no workflow) gets a failed result, and the rest go on. The results file gets one
line per finished input line, ``{"line", "run_id", "status", "outputs", "error"}``; with ``--outputs DIR``,
``outputs`` are the files downloaded to ``DIR/<line>/``, else their URLs. Exit 0 when every line
succeeded, 1 when any failed (or is left to send again), 2 for a usage error.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from dispatcher.cli.batchfile import ResultsError, parse_input
from dispatcher.cli.common import die
from dispatcher.cli.run import ApiKeyOpt, ApiUrlOpt

INTERRUPTED = 130


def batch_command(
    input_file: Annotated[Path, typer.Argument(help="runs, one JSON object a line", show_default=False)],
    out: Annotated[Path, typer.Option("--out", help="results file (JSON lines): read first, to resume; appended to")],
    outputs: Annotated[
        Path | None, typer.Option("--outputs", help="download each line's outputs to DIR/<line>/<filename>")
    ] = None,
    concurrency: Annotated[int, typer.Option(help="downloads at once")] = 8,
    json_output: Annotated[bool, typer.Option("--json", help="print the summary as JSON")] = False,
    api_url: ApiUrlOpt = None,
    api_key: ApiKeyOpt = None,
) -> None:
    """Submit every line of INPUT_FILE, follow the runs, write each result to --out as soon as it ends."""
    if concurrency < 1:
        raise die("--concurrency must be at least 1")
    try:
        data = input_file.read_bytes()
    except OSError as exc:
        raise die(f"cannot read {input_file}: {exc.strerror or exc}") from None
    lines = parse_input(str(input_file.resolve()), data)
    import json

    from dispatcher.cli.batch_run import BatchRunner
    from dispatcher.cli.progress import BatchProgress
    from dispatcher.cli.remote import api_errors, connect
    from dispatcher.cli.results import ResultsFile

    try:
        results, scan = ResultsFile.open(out)
    except ResultsError as exc:
        raise die(f"{out} is not a results file of this command: {exc}") from None
    except OSError as exc:
        raise die(f"cannot open {out}: {exc.strerror or exc}") from None
    done = sum(1 for line in lines if line.number in scan.records)
    progress = BatchProgress(len(lines), done, enabled=sys.stderr.isatty())
    try:
        with results, connect(api_url, api_key) as client, api_errors("batch"):
            runner = BatchRunner(
                client, results, scan.records, lines, outputs=outputs, concurrency=concurrency, progress=progress
            )
            summary = runner.run()
    except KeyboardInterrupt:
        progress.close()
        typer.echo("comfy-dispatch: interrupted; the runs go on: run the same command again to resume", err=True)
        raise typer.Exit(INTERRUPTED) from None
    except OSError as exc:  # writing a result or a download: a full disk, a folder that cannot be made
        progress.close()
        typer.echo(f"comfy-dispatch: batch: {exc}", err=True)
        raise typer.Exit(1) from None
    finally:
        progress.close()
    typer.echo(json.dumps(summary.as_json()) if json_output else summary.text())
    if not summary.ok:
        raise typer.Exit(1)
