"""Executing one run: claim its lease, drive ComfyUI, store the outputs, end the run once.

``execute_run`` is the function RQ calls (by name) with the run id. A run
RQ delivers twice finds the lease taken or the run ended and does nothing.
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from typing import Any

from dispatcher.backoff import full_jitter
from dispatcher.errors import ComfyUIError, ComfyUIValidationError, LeaseLost
from dispatcher.lease import ClaimResult, Lease
from dispatcher.outputs import content_type, files_from_history, unique_names
from dispatcher.runs import Output, Run, RunStatus
from dispatcher.submit import enqueue_data
from worker import context
from worker.context import WorkerContext
from worker.follow import follow_prompt
from worker.keeper import LeaseKeeper

log = logging.getLogger(__name__)


def execute_run(run_id: str) -> str:
    """RQ's entry point: execute ``run_id`` if this worker wins its lease. Returns what happened."""
    return RunExecution(context.current(), run_id).execute()


class RunExecution:
    def __init__(self, ctx: WorkerContext, run_id: str) -> None:
        self.ctx = ctx
        self.run_id = run_id

    def execute(self) -> str:
        ctx = self.ctx
        claim = ctx.leases.claim(self.run_id, ctx.name, comfyui_url=ctx.client.base_url)
        if claim.result is not ClaimResult.OK or claim.lease is None:
            log.info("run %s not executed here: %s %s", self.run_id, claim.result, claim.detail)
            return str(claim.result)
        lease = claim.lease
        run = ctx.runs.get(self.run_id)
        if run is None:  # expired between claim and read: nothing left to do
            return "missing"
        with ctx.state.lock:
            ctx.state.current_run = run.id
        try:
            with LeaseKeeper(ctx.leases, lease, ctx.settings.lease_seconds) as keeper:
                return self._execute(run, lease, keeper)
        finally:
            with ctx.state.lock:
                ctx.state.current_run = ""

    def _execute(self, run: Run, lease: Lease, keeper: LeaseKeeper) -> str:
        ctx = self.ctx
        log.info("run %s attempt %s: executing %s on %s", run.id, lease.attempt, run.workflow, ctx.client.base_url)

        def on_progress(progress: float, node: str | None) -> None:
            if not ctx.leases.update(lease, progress=repr(round(progress, 4)), node=node or ""):
                keeper.lost.set()

        def should_stop() -> str | None:
            return "lease lost" if keeper.lost.is_set() else None

        try:
            entry = follow_prompt(
                ctx.client,
                ctx.runs.graph(run.id),
                prompt_id=run.prompt_id,
                client_id=run.client_id,
                deadline=time.monotonic() + run.timeout,
                recover=lease.attempt > 1,
                on_progress=on_progress,
                should_stop=should_stop,
            )
            outputs = self._store_outputs(run, lease, entry)
        except LeaseLost as exc:
            log.warning("run %s attempt %s abandoned: %s", run.id, lease.attempt, exc)
            return "lease-lost"
        except ComfyUIError as exc:
            return self._failed(run, lease, exc)
        if keeper.lost.is_set() or not ctx.leases.complete(lease, RunStatus.SUCCEEDED, outputs=outputs):
            log.warning("run %s attempt %s finished after losing its lease; result dropped", run.id, lease.attempt)
            return "lease-lost"
        log.info("run %s succeeded with %d output(s)", run.id, len(outputs))
        return "succeeded"

    def _store_outputs(self, run: Run, lease: Lease, entry: dict[str, Any]) -> list[Output]:
        ctx = self.ctx
        files = files_from_history(entry)
        outputs: list[Output] = []
        for file, name in zip(files, unique_names(files), strict=True):
            key = f"{run.id}/{lease.attempt}/{name}"
            ctype = content_type(name)
            with ctx.client.view(file.filename, file.subfolder, file.type) as response:
                size = ctx.store.put(key, response.iter_content(chunk_size=256 * 1024), ctype)
            outputs.append(Output(file.node, name, ctype, size, key, file.subfolder, file.type))
        return outputs

    def _failed(self, run: Run, lease: Lease, exc: ComfyUIError) -> str:
        ctx = self.ctx
        error = exc.to_dict()
        if exc.transient and not isinstance(exc, ComfyUIValidationError) and lease.attempt < run.max_attempts:
            delay = full_jitter(lease.attempt)
            if ctx.leases.requeue(lease, run.priority, error=error):
                data = enqueue_data(ctx.queue, run)
                ctx.queue.enqueue_in(
                    timedelta(seconds=delay),
                    data.func,
                    *data.args,
                    job_timeout=data.timeout,
                    result_ttl=data.result_ttl,
                    failure_ttl=data.failure_ttl,
                    description=data.description,
                )
                log.warning("run %s attempt %s failed (%s); retrying in %.1fs", run.id, lease.attempt, exc, delay)
                return "retrying"
            return "lease-lost"
        if ctx.leases.complete(lease, RunStatus.FAILED, error=error):
            log.warning("run %s failed: %s", run.id, exc)
            return "failed"
        return "lease-lost"
