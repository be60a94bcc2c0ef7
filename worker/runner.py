"""Executing a run: claim its lease, drive ComfyUI, store the outputs, end the run once.

``execute_run`` is the function of a run's RQ job, called with the run id and its dispatch number (both
read from the job's id: ``worker.jobs``). It claims
the run and hands it to a thread of its own in the worker's pipeline, then returns, so RQ's loop can
take the next run while this one executes: ComfyUI's queue never runs dry between runs. A job RQ
delivers twice, or an older dispatch of the run, finds the run claimed, ended or re-dispatched and does
nothing.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from dispatcher import metrics
from dispatcher.backoff import full_jitter
from dispatcher.cancel import CANCELED_ERROR
from dispatcher.errors import (
    ComfyUIError,
    ComfyUIUnavailable,
    ComfyUIValidationError,
    LeaseLost,
    RunCanceled,
    RunReleased,
    StorageError,
)
from dispatcher.lease import ClaimResult, Lease, PoppedJob, ReleaseResult, RequeueResult
from dispatcher.outputs import OutputFile, content_type, files_from_outputs, inline_text, kind_of, unique_names
from dispatcher.runs import Output, Run, RunStatus
from dispatcher.scheduling.dispatch import tell_idle
from worker import capabilities, context, heartbeat
from worker.context import WorkerContext
from worker.follow import (
    STOP_CANCELED,
    STOP_CHECK_SECONDS,
    STOP_RELEASE,
    STOP_SUPERSEDED,
    Prompt,
    PromptFollower,
    stop_prompt,
)
from worker.inputs import resolve_images
from worker.pipeline import Held
from worker.storing import STORE_ATTEMPTS, store_output

log = logging.getLogger(__name__)
T = TypeVar("T")


def execute_run(run_id: str, dispatch: int, *, popped: PoppedJob | None = None) -> str:
    """RQ's entry point: claim ``run_id`` and execute it in the pipeline. Returns what happened to the claim.
    ``popped``: the RQ job it came in, which the claim takes off RQ's lists (see :meth:`RunExecution.claim`)."""
    ctx = context.current()
    execution = RunExecution(ctx, run_id, dispatch)
    refused = execution.claim(popped)
    if refused is not None:
        return refused
    ctx.runners.submit(execution.run)  # a slot was free (the RQ loop waits for one), so is a thread
    return "accepted"


class RunExecution:
    def __init__(self, ctx: WorkerContext, run_id: str, dispatch: int) -> None:
        self.ctx = ctx
        self.run_id = run_id
        self.dispatch = dispatch
        self.held: Held | None = None
        self.record: Run | None = None
        self.graph: dict[str, Any] = {}
        self.follower: PromptFollower | None = None
        self.early: dict[OutputFile, Output] = {}  # outputs stored while the rest of the graph still ran
        self.store_seconds = 0.0
        self.prepared: str | None = None  # the output store's prefix made ready for this attempt (_posted)
        self.stored = False  # a file of this attempt is in the output store
        # Told by the script that ended the run (the worker held nothing else), as of the pipeline's ``added``.
        self.told_idle: int | None = None

    def execute(self) -> str:
        """Claim the run and execute it in the calling thread; what happened."""
        return self.claim() or self.run()

    def claim(self, popped: PoppedJob | None = None) -> str | None:
        """Take the run's lease and a place in the pipeline; None if taken, else why not. ``popped``: the RQ job
        the run came in leaves RQ's intermediate list and is deleted in the claim's own step (whatever its answer):
        no round trip of its own for that on every run. Not claimed here (ComfyUI down), it stays for the caller."""
        ctx = self.ctx
        if not ctx.state.healthy.is_set() and not ctx.client.healthy():
            # Popped while our ComfyUI is down: hand it straight back to a ready worker, untouched.
            run = ctx.runs.get(self.run_id)
            if run is not None and run.dispatches == self.dispatch and ctx.reaper.redispatch(run):
                log.warning("run %s handed back: ComfyUI %s does not answer", self.run_id, ctx.client.base_url)
            return "paused"
        claim = ctx.leases.claim(self.run_id, ctx.name, self.dispatch, comfyui_url=ctx.client.base_url, popped=popped)
        if claim.result is not ClaimResult.OK or claim.lease is None or claim.run is None:
            log.info("run %s not executed here: %s %s", self.run_id, claim.result, claim.detail)
            return str(claim.result)
        self.record, self.graph = claim.run, json.loads(claim.graph or "{}")
        self.held = Held(claim.lease, claim.run.prompt_id)
        ctx.pipeline.add(self.held)
        if claim.lease.attempt == 1 and self.dispatch == 1:
            # Only a run's first claim is measured: a retry's time back in the queue is not recorded on the run,
            # and a run handed back unstarted (rebalanced to a worker that idles) is claimed again at attempt 1.
            metrics.QUEUE_WAIT.labels(claim.run.priority.value).observe(max(0.0, time.time() - claim.run.created_at))
        return None

    def run(self) -> str:
        """Execute the claimed run to its end; what happened. Leaves the pipeline whatever happens."""
        assert self.held is not None and self.record is not None, "claim() first"
        try:
            return self._execute(self.record, self.held)
        except Exception:  # the run's own thread: log it; the lease expires and the reaper retries the run
            log.exception("run %s: unexpected error; its lease will expire and the run be retried", self.run_id)
            self._abandon()
            return "crashed"
        finally:
            self.ctx.pipeline.discard(self.held)
            # Told already, unless a run came (and maybe went) since: then the scheduler heard of it before that.
            if not len(self.ctx.pipeline) and self.told_idle != self.ctx.pipeline.added:
                self._idle()
            self._unprepare()  # the slot is free first: this is tidying up

    def _unprepare(self) -> None:
        """Take back the output store's prefix prepared for this attempt, if it stored nothing there."""
        prefix, self.prepared = self.prepared, None
        if prefix is None or self.stored:
            return
        try:
            self.ctx.store.unprepare(prefix)
        except Exception as exc:  # best effort: an empty folder left, nothing else
            log.debug("run %s: output store's %s left: %s", self.run_id, prefix, exc)

    def _idle(self) -> None:
        """Nothing held any more: tell the scheduler, which may move here a run waiting behind another."""
        try:
            tell_idle(self.ctx.conns.text)
        except RedisError as exc:
            log.warning("could not tell the scheduler this worker is idle: %s", exc)

    def _execute(self, run: Run, held: Held) -> str:
        ctx = self.ctx
        lease = held.lease
        log.info("run %s attempt %s: executing %s on %s", run.id, lease.attempt, run.workflow, ctx.client.base_url)

        def on_progress(progress: float, node: str | None) -> None:
            try:
                if not ctx.leases.update(lease, progress=repr(round(progress, 4)), node=node or ""):
                    held.lost.set()
            except RedisError as exc:  # progress is a courtesy: the run goes on, the keeper guards the lease
                log.warning("run %s: progress not written: %s", run.id, exc)

        def on_start() -> None:
            held.executing = True

        try:
            if run.cancel_requested:
                held.canceled.set()
            # Input images become files of this worker's ComfyUI first (worker.inputs); a no-op for most graphs.
            graph = resolve_images(ctx, run, self.graph)
            while not ctx.pipeline.wait_turn(held, STOP_CHECK_SECONDS):
                _raise_stop(held)
            _raise_stop(held)
            prompt = Prompt(run.prompt_id, graph, run.timeout, recover=lease.attempt > 1)
            self.follower = PromptFollower(
                ctx.client,
                ctx.hub,
                prompt,
                on_progress=on_progress,
                should_stop=lambda: _stop_reason(held),
                on_start=on_start,
                on_posted=lambda: self._posted(run, held),
                on_output=lambda node, ui: self._store_early(run, lease, node, ui),
            )
            finished = self.follower.run()
            metrics.COMFYUI_EXECUTION.labels(run.workflow).observe(self._gpu_seconds())
            outputs = self._store_outputs(run, lease, finished.outputs)
        except LeaseLost as exc:
            log.warning("run %s attempt %s abandoned: %s", run.id, lease.attempt, exc)
            return "superseded" if held.superseded.is_set() else "lease-lost"
        except RunCanceled:
            return self._end(run, lease, RunStatus.CANCELED, error=CANCELED_ERROR)
        except RunReleased:
            return self._release(run, lease)
        except ComfyUIError as exc:
            return self._failed(run, lease, exc)
        if held.lost.is_set():
            return "lease-lost"
        return self._end(run, lease, RunStatus.SUCCEEDED, outputs=outputs)

    def _posted(self, run: Run, held: Held) -> None:
        """The prompt is in ComfyUI's queue: the next held run may post behind it; its checkpoint is the one
        ComfyUI will have loaded (the heartbeat reports it, routing prefers this worker for it)."""
        self.ctx.pipeline.posted(held)
        capabilities.note_posted(self.ctx, run.checkpoint)
        try:  # while ComfyUI executes it: its outputs are stored sooner once it ends
            self.ctx.store.prepare(prefix := _attempt_prefix(run, held.lease))
            self.prepared = prefix
        except (StorageError, OSError) as exc:  # put tries again, and reports what still fails
            log.debug("run %s: output store not prepared: %s", run.id, exc)

    def _release(self, run: Run, lease: Lease) -> str:
        # Before the release: it gives the attempt number back, so the next claim (maybe on another worker, at
        # once) prepares this very prefix.
        self._unprepare()
        result = _through_redis_blips(self.ctx.leases.release, lease, run)
        if result is ReleaseResult.CANCELING:
            return self._end(run, lease, RunStatus.CANCELED, error=CANCELED_ERROR)
        log.info("run %s handed back before it started: this worker stops (%s)", run.id, result)
        return "released" if result is ReleaseResult.RELEASED else "lease-lost"

    def _gpu_seconds(self) -> float:
        return self.follower.gpu_seconds if self.follower is not None else 0.0

    def _prompt_left_behind(self) -> bool:
        """Posted (or found) on ComfyUI, and its end not seen: it may still be queued or running there."""
        follower = self.follower
        return follower is not None and follower.posted and not follower.tracker.ended and follower.finished is None

    def _abandon(self) -> None:
        """Take our prompt off ComfyUI (best effort) before the run goes to another attempt, which may run on
        another ComfyUI: left there, it would execute for nothing."""
        if self.follower is None or not self._prompt_left_behind():
            return
        if self.held is not None and self.held.superseded.is_set():
            return  # the newer attempt here follows this very prompt
        try:
            stop_prompt(self.ctx.client, self.follower.prompt.prompt_id)
        except ComfyUIError as exc:
            log.warning("run %s: could not take its prompt off ComfyUI: %s", self.run_id, exc)

    def _end(
        self,
        run: Run,
        lease: Lease,
        status: RunStatus,
        *,
        error: dict[str, Any] | None = None,
        outputs: list[Output] | None = None,
    ) -> str:
        gpu = self._gpu_seconds()
        # The only run held (RQ may pop another meanwhile: then the worker is not idle, and the scheduler
        # woken for nothing, as it would be by a tell_idle before that pop).
        added = self.ctx.pipeline.added
        idle = len(self.ctx.pipeline) <= 1
        ended = _through_redis_blips(
            self.ctx.leases.complete, lease, run, status, error=error, outputs=outputs, gpu_seconds=gpu, idle=idle
        )
        self.told_idle = added if ended and idle else None
        if not ended:
            log.warning("run %s attempt %s ended after losing its lease; result dropped", run.id, lease.attempt)
            return "lease-lost"
        log.info("run %s %s (%d output(s))", run.id, status, len(outputs or []))
        metrics.GPU_SECONDS.labels(run.tenant).inc(gpu)
        metrics.observe_run_end(run.workflow, status.value, time.time() - run.created_at)
        return str(status)

    def _store_early(self, run: Run, lease: Lease, node: str, ui: dict[str, Any]) -> None:
        """Store the files an output node saved as soon as ComfyUI says so (``executed``), while the rest of the
        graph runs. A name that clashes with one stored already waits for the end, where every name is known;
        so does a file that could not be stored at the first try (the end tries again, with retries: the
        prompt meanwhile goes on).
        Should the prompt fail later, these files are left unreferenced under the attempt's own keys."""
        taken = {output.filename for output in self.early.values()}
        for file in files_from_outputs({node: ui}):
            if file.type == "output" and file.filename not in taken and file not in self.early:
                try:
                    self.early[file] = self._store(run, lease, file, file.filename, attempts=1)
                except ComfyUIError as exc:
                    log.warning("run %s: output %s not stored early (%s); trying at the end", run.id, file, exc)
                    continue
                taken.add(file.filename)

    def _store_outputs(self, run: Run, lease: Lease, ui_outputs: dict[str, Any]) -> list[Output]:
        """Every output of the finished prompt, stored: the ones stored early as they were (same name)."""
        files = files_from_outputs(ui_outputs)
        outputs = []
        for file, name in zip(files, unique_names(files), strict=True):
            early = self.early.get(file)
            outputs.append(
                early if early is not None and early.filename == name else self._store(run, lease, file, name)
            )
        metrics.OUTPUT_UPLOAD.observe(self.store_seconds)
        return outputs

    def _store(self, run: Run, lease: Lease, file: OutputFile, name: str, attempts: int = STORE_ATTEMPTS) -> Output:
        started = time.monotonic()
        key = f"{_attempt_prefix(run, lease)}/{name}"
        ctype = content_type(name)
        # Retried up to ``attempts`` times; else OutputNotStored.
        local_dir = self.ctx.settings.comfyui_output_dir
        size = store_output(self.ctx.client, self.ctx.store, file, key, ctype, attempts=attempts, local_dir=local_dir)
        self.stored = True
        metrics.OUTPUT_BYTES.inc(size)
        self.store_seconds += time.monotonic() - started
        return Output(
            file.node,
            name,
            ctype,
            size,
            key,
            file.subfolder,
            file.type,
            # A .txt a node saved is a file; "text" is a node's text output (shown inline).
            kind="text" if file.text is not None else ("file" if kind_of(ctype) == "text" else kind_of(ctype)),
            text=inline_text(file.text),
            ui_key=file.ui_key,
        )

    def _failed(self, run: Run, lease: Lease, exc: ComfyUIError) -> str:
        ctx = self.ctx
        error = exc.to_dict()
        if not exc.transient or isinstance(exc, ComfyUIValidationError):
            return self._end(run, lease, RunStatus.FAILED, error=error)
        gpu = self._gpu_seconds()
        if isinstance(exc, ComfyUIUnavailable):
            # Look again now, not at the next heartbeat: a ComfyUI that is down must not get the retry.
            heartbeat.beat(ctx)
            if self._prompt_left_behind():
                # It may still run there and a retry on that ComfyUI takes it over (``worker.follow``), charged
                # from then on: what ran before is not charged twice (nor, should it be lost, at all).
                gpu = 0.0
        elif self._prompt_left_behind():
            self._abandon()  # ComfyUI answers, our prompt may still be there: the retry must not race it
        delay = full_jitter(lease.attempt, base=ctx.settings.retry_base, cap=ctx.settings.retry_cap)
        result = _through_redis_blips(ctx.leases.requeue, lease, run, error=error, delay=delay, gpu_seconds=gpu)
        if result is not RequeueResult.LOST:
            metrics.GPU_SECONDS.labels(run.tenant).inc(gpu)
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


def _attempt_prefix(run: Run, lease: Lease) -> str:
    """Where an attempt's outputs go in the output store: one attempt never writes over another's."""
    return f"{run.id}/{lease.attempt}"


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


def _stop_reason(held: Held) -> str | None:
    """Why the run's thread must stop following its prompt now (``worker.follow``'s stop reasons), or None."""
    if held.superseded.is_set():
        return STOP_SUPERSEDED
    if held.lost.is_set():
        return "lease lost"
    if held.canceled.is_set():
        return STOP_CANCELED
    return STOP_RELEASE if held.release.is_set() and not held.executing else None


def _raise_stop(held: Held) -> None:
    """Before the prompt is posted: stop as :func:`_stop_reason` says (nothing to take off ComfyUI yet)."""
    reason = _stop_reason(held)
    if reason == STOP_CANCELED:
        raise RunCanceled("canceled before it started")
    if reason == STOP_RELEASE:
        raise RunReleased("the worker stops before the run was posted")
    if reason is not None:
        raise LeaseLost(reason)
