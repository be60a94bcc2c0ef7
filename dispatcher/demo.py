"""The demo ``up`` runs: a few runs through the real API, their status and where their outputs are."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import requests
from redis import Redis
from rich.console import Console
from rich.table import Table

from dispatcher.runs import RunStore
from dispatcher.settings import Settings
from dispatcher.waiting import wait_for_run

log = logging.getLogger(__name__)

DEMO_RUNS: list[tuple[str, dict[str, Any]]] = [
    ("invert", {"params": {"width": 256, "height": 256, "color": 0xFF0000}, "priority": "high"}),
    ("invert", {"params": {"width": 128, "height": 128, "color": 0x00FF00}}),
    ("invert", {"params": {"width": 64, "height": 64, "color": 0x0000FF}, "priority": "low"}),
    ("blur-slow", {"params": {"color": 0x336699}}),
]


def run_demo(
    api: str, env: dict[str, str], settings: Settings, *, api_key: str, console: Console | None = None
) -> bool:
    """Submit the demo runs, wait for each, print a table; True when every run succeeded."""
    console = console or Console()
    session = requests.Session()
    session.headers["X-API-KEY"] = api_key
    submitted: list[dict[str, Any]] = []
    for workflow, body in DEMO_RUNS:
        reply = session.post(f"{api}/v1/workflows/{workflow}/runs", json=body, timeout=10)
        if reply.status_code != 202:
            console.print(f"[red]submitting {workflow} failed: {reply.status_code} {reply.text}")
            return False
        submitted.append(reply.json())
        console.print(f"submitted [bold]{workflow}[/] run {reply.json()['id']} ({body.get('priority', 'normal')})")
    output_dir = Path(env.get("COMFY_DISPATCH_OUTPUT_DIR", str(settings.output_dir)))
    redis = Redis.from_url(env.get("COMFY_DISPATCH_REDIS_URL", settings.redis_url), decode_responses=True)
    table = Table(title="Demo runs")
    for column in ("run", "workflow", "status", "seconds", "outputs"):
        table.add_column(column)
    files: list[str] = []
    ok = True
    for run in submitted:
        wait_for_run(redis, RunStore(redis), run["id"], 300)  # pub/sub: wakes when the run ends
        final = session.get(f"{api}/v1/runs/{run['id']}", timeout=10).json()
        record = RunStore(redis).get(run["id"])
        ok = ok and final["status"] == "succeeded"
        error = (final.get("error") or {}).get("message", "")
        table.add_row(
            run["id"], final["workflow"], final["status"], _seconds(final), error or str(len(final["outputs"]))
        )
        for view, stored in zip(final["outputs"], record.outputs if record else [], strict=False):
            files.append(f"{run['id'][:8]}  {view['url']}\n          {output_dir / stored.key}")
    redis.close()
    console.print(table)
    console.print("Outputs (URL, then the file in the local store):")
    for line in files:
        console.print(line, soft_wrap=True, highlight=False)
    return ok


def _seconds(run: dict[str, Any]) -> str:
    from datetime import datetime

    if not run.get("finished_at") or not run.get("created_at"):
        return "-"
    end = datetime.fromisoformat(run["finished_at"])
    start = datetime.fromisoformat(run["created_at"])
    return f"{(end - start).total_seconds():.2f}"
