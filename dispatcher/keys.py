"""Every Redis key and channel name Comfy Dispatch uses, built in one place."""

from __future__ import annotations

NS = "cd"


def run(run_id: str) -> str:
    """Hash: the run record (see :mod:`dispatcher.runs`)."""
    return f"{NS}:run:{run_id}"


def run_graph(run_id: str) -> str:
    """String: the bound ComfyUI graph of a run, as JSON."""
    return f"{NS}:run:{run_id}:graph"


def run_lease(run_id: str) -> str:
    """String ``<worker>|<attempt>`` with a TTL: who may execute and complete the run now."""
    return f"{NS}:run:{run_id}:lease"


def queued(priority: str) -> str:
    """Sorted set: queued run ids of one priority, scored by creation time."""
    return f"{NS}:queued:{priority}"


def run_done_channel(run_id: str) -> str:
    """Pub/sub channel: a message when the run reaches a terminal status."""
    return f"{NS}:run:{run_id}:done"


def worker(name: str) -> str:
    """Hash with a TTL: a worker's last reported state."""
    return f"{NS}:worker:{name}"


WORKERS = f"{NS}:workers"
"""Sorted set: worker names scored by their last heartbeat."""


RECENT_RUNS = f"{NS}:recent-runs"
"""List: ids of accepted runs, newest first, capped at ``RECENT_RUNS_MAX`` (the Flask seed's /api/history)."""

RECENT_RUNS_MAX = 1000
