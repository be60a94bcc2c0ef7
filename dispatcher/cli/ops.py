"""``comfy-dispatch dead-letter ...``: runs that failed with every attempt used."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer

from dispatcher.cli.admin import RedisOpt, _redis
from dispatcher.cli.common import die
from dispatcher.deadletter import DeadLetters

dead_letter_app = typer.Typer(no_args_is_help=True, help="List and requeue runs that used every attempt.")


@dead_letter_app.command("list")
def dead_letter_list(
    limit: Annotated[int, typer.Option(min=1, help="most runs to list")] = 100, redis_url: RedisOpt = None
) -> None:
    """One line per dead-lettered run: id, workflow, tenant, failed at, attempts, last error."""
    with _redis(redis_url) as (client, _):
        for run in DeadLetters(client).runs_listed(limit):
            when = datetime.fromtimestamp(run.finished_at or 0, tz=UTC).isoformat(timespec="seconds")
            message = (run.error or {}).get("message", "")
            typer.echo(f"{run.id}\t{run.workflow}\t{run.tenant}\t{when}\t{run.attempts}\t{message}")


@dead_letter_app.command("requeue")
def dead_letter_requeue(
    run_ids: Annotated[list[str] | None, typer.Argument(help="runs to queue again")] = None,
    all_runs: Annotated[bool, typer.Option("--all", help="requeue every dead-lettered run")] = False,
    redis_url: RedisOpt = None,
) -> None:
    """Queue dead-lettered runs again with fresh attempts (same parameters, same run ids)."""
    if not run_ids and not all_runs:
        raise die("name the runs to requeue, or pass --all")
    with _redis(redis_url) as (client, _):
        letters = DeadLetters(client)
        missing = []
        for run_id in letters.ids() if all_runs else run_ids or []:
            if letters.requeue(run_id):
                typer.echo(f"requeued {run_id}", err=True)
            else:
                missing.append(run_id)
        if missing:
            raise die(f"not in the dead-letter set: {', '.join(missing)}")
