"""Executing one run: claim its lease, drive ComfyUI, store the outputs, end the run once.

``execute_run`` is the function RQ calls (by name) with the run id and its
dispatch number. A job RQ delivers twice, or an older dispatch of the run,
finds the run claimed, ended or re-dispatched and does nothing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from dispatcher import metrics
from dispatcher.backoff import full_jitter
from dispatcher.cancel import CANCELED_ERROR
from dispatcher.errors import ComfyUIError, ComfyUIUnavailable, ComfyUIValidationError, LeaseLost, RunCanceled
from dispatcher.lease import ClaimResult, Lease, RequeueResult
from dispatcher.outputs import content_type, files_from_history, unique_names
from dispatcher.runs import Output, Run, RunStatus
from worker import context, heartbeat
from worker.context import WorkerContext
from worker.follow import STOP_CANCELED, follow_prompt
from worker.inputs import resolve_images
from worker.keeper import LeaseKeeper
from worker.storing import store_output

log = logging.getLogger(__name__)
T = TypeVar("T")


def execute_run(run_id: str, dispatch: int) -> str:
    """RQ's entry point: execute ``run_id`` if this worker wins its lease. Returns what happened."""
    return RunExecution(context.current(), run_id, dispatch).execute()


class RunExecution:
    def __init__(self, ctx: WorkerContext, run_id: str, dispatch: int) -> None:
        self.ctx = ctx
        self.run_id = run_id
        self.dispatch = dispatch

    def execute(self) -> str:
        ctx = self.ctx
        if not ctx.state.healthy.is_set() and not ctx.client.healthy():
            # Popped while our ComfyUI is down: hand it straight back to a ready worker, untouched.
            run = ctx.runs.get(self.run_id)
            if run is not None and run.dispatches == self.dispatch and ctx.reaper.redispatch(run):
                log.warning("run %s handed back: ComfyUI %s does not answer", self.run_id, ctx.client.base_url)
            return "paused"
        claim = ctx.leases.claim(self.run_id, ctx.name, self.dispatch, comfyui_url=ctx.client.base_url)
        if claim.result is not ClaimResult.OK or claim.lease is None:
            log.info("run %s not executed here: %s %s", self.run_id, claim.result, claim.detail)
            return str(claim.result)
        lease = claim.lease
        run = ctx.runs.get(self.run_id)
        if run is None:  # expired between claim and read: nothing left to do
            return "missing"
        if lease.attempt == 1:
            # A retry's time back in the queue is not recorded on the run: only first claims are measured.
            metrics.QUEUE_WAIT.labels(run.priority.value).observe(max(0.0, time.time() - run.created_at))
        ctx.state.start(run.id, run.prompt_id)
        try:
            with LeaseKeeper(ctx.leases, lease, ctx.settings.lease_seconds) as keeper:
                return self._execute(run, lease, keeper)
        finally:
            ctx.state.finish()

    def _execute(self, run: Run, lease: Lease, keeper: LeaseKeeper) -> str:
        ctx = self.ctx
        log.info("run %s attempt %s: executing %s on %s", run.id, lease.attempt, run.workflow, ctx.client.base_url)

        def on_progress(progress: float, node: str | None) -> None:
            if not ctx.leases.update(lease, progress=repr(round(progress, 4)), node=node or ""):
                keeper.lost.set()

        def should_stop() -> str | None:
            if keeper.lost.is_set():
                return "lease lost"
            return STOP_CANCELED if ctx.state.canceled.is_set() else None

        try:
            if run.cancel_requested:
                raise RunCanceled("canceled before it started")
            # Input images become files of this worker's ComfyUI first (worker.inputs); a no-op for most graphs.
            graph = resolve_images(ctx, run, ctx.runs.graph(run.id))
            posted = time.monotonic()
            entry = follow_prompt(
                ctx.client,
                graph,
                prompt_id=run.prompt_id,
                client_id=run.client_id,
                deadline=time.monotonic() + run.timeout,
                recover=lease.attempt > 1,
                on_progress=on_progress,
                should_stop=should_stop,
            )
            metrics.COMFYUI_EXECUTION.labels(run.workflow).observe(time.monotonic() - posted)
            outputs = self._store_outputs(run, lease, entry)
        except LeaseLost as exc:
            log.warning("run %s attempt %s abandoned: %s", run.id, lease.attempt, exc)
            return "lease-lost"
        except RunCanceled:
            return self._end(run, lease, RunStatus.CANCELED, error=CANCELED_ERROR)
        except ComfyUIError as exc:
            return self._failed(run, lease, exc)
        if keeper.lost.is_set():
            return "lease-lost"
        return self._end(run, lease, RunStatus.SUCCEEDED, outputs=outputs)

    def _end(
        self,
        run: Run,
        lease: Lease,
        status: RunStatus,
        *,
        error: dict[str, Any] | None = None,
        outputs: list[Output] | None = None,
    ) -> str:
        if not _through_redis_blips(self.ctx.leases.complete, lease, run, status, error=error, outputs=outputs):
            log.warning("run %s attempt %s ended after losing its lease; result dropped", run.id, lease.attempt)
            return "lease-lost"
        log.info("run %s %s (%d output(s))", run.id, status, len(outputs or []))
        metrics.observe_run_end(run.workflow, status.value, time.time() - run.created_at)
        return str(status)

    def _store_outputs(self, run: Run, lease: Lease, entry: dict[str, Any]) -> list[Output]:
        ctx = self.ctx
        files = files_from_history(entry)
        outputs: list[Output] = []
        started = time.monotonic()
        for file, name in zip(files, unique_names(files), strict=True):
            key = f"{run.id}/{lease.attempt}/{name}"
            ctype = content_type(name)
            size = store_output(ctx.client, ctx.store, file, key, ctype)  # retried; else transient OutputNotStored
            outputs.append(Output(file.node, name, ctype, size, key, file.subfolder, file.type))
            metrics.OUTPUT_BYTES.inc(size)
        metrics.OUTPUT_UPLOAD.observe(time.monotonic() - started)
        return outputs

    def _failed(self, run: Run, lease: Lease, exc: ComfyUIError) -> str:
        ctx = self.ctx
        error = exc.to_dict()
        if not exc.transient or isinstance(exc, ComfyUIValidationError):
            return self._end(run, lease, RunStatus.FAILED, error=error)
        if isinstance(exc, ComfyUIUnavailable):
            # Look again now, not at the next heartbeat: a ComfyUI that is down must not get the retry.
            heartbeat.beat(ctx)
        delay = full_jitter(lease.attempt, base=ctx.settings.retry_base, cap=ctx.settings.retry_cap)
        result = _through_redis_blips(ctx.leases.requeue, lease, run, error=error, delay=delay)
        if result is RequeueResult.RETRYING:
            log.warning("run %s attempt %s failed (%s); retrying in %.1fs", run.id, lease.attempt, exc, delay)
            metrics.RUN_RETRIES.labels(metrics.retry_reason(exc)).inc()
            return "retrying"
        if result is RequeueResult.DEAD:
            log.error("run %s failed on its last attempt (%s): dead-lettered", run.id, exc)
            metrics.observe_run_end(run.workflow, RunStatus.FAILED.value, time.time() - run.created_at)
            return "failed"
        if result is RequeueResult.CANCELED:  # a cancel came in meanwhile: the requeue ended it
            metrics.observe_run_end(run.workflow, RunStatus.CANCELED.value, time.time() - run.created_at)
        return "lease-lost" if result is RequeueResult.LOST else str(result)


# How long the end of a run keeps trying to reach Redis (a restart takes about a second): the work is
# done, and giving up here would make the reaper run it again once the lease expires.
END_RETRY_SECONDS = 15.0


def _through_redis_blips(write: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``write(*args, **kwargs)``, retried with backoff while Redis is unreachable, for a bounded time."""
    deadline = time.monotonic() + END_RETRY_SECONDS
    delay = 0.1
    while True:
        try:
            return write(*args, **kwargs)
        except (RedisConnectionError, RedisTimeoutError):
            if time.monotonic() + delay > deadline:
                raise
            log.warning("Redis unreachable while ending a run; trying again in %.1fs", delay)
            time.sleep(delay)  # waiting for Redis to come back: there is no event to wait on
            delay = min(delay * 2, 2.0)
