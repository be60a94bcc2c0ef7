"""``comfy-dispatch worker``: one RQ worker on exactly one queue, bound to one ComfyUI.

One queue only: with several, RQ pops with plain BLPOP and a SIGKILL between
pop and registry write loses the job (RQ-NOTES). With one, RQ uses BLMOVE
into its intermediate list. ``SimpleWorker`` runs jobs in this process, so
keep-alive connections, the websocket, the heartbeat and the metrics live
across jobs; the lease keeper stands in for RQ's per-job heartbeat.

A job only claims its run and hands it to a thread of the worker's pipeline
(``worker.runner``): RQ's loop pops the next job as soon as a pipeline slot
is free, so up to ``pipeline_depth`` runs are held at once, the next ones
already posted to ComfyUI while one executes.
"""

from __future__ import annotations

import logging
import socket
import time
from typing import Any
from urllib.parse import urlsplit

from redis.exceptions import RedisError
from rq import Queue, SimpleWorker
from rq.job import Job

from dispatcher import metrics
from dispatcher.errors import ComfyUIError
from dispatcher.routing.lua import route_of, route_queue
from dispatcher.scheduling.handout import run_of_job
from dispatcher.scheduling.recovery import Reaper
from dispatcher.settings import Settings
from worker import capabilities, context, heartbeat, jobs, names
from worker.cancel_watch import CancelWatcher
from worker.context import WorkerContext
from worker.keeper import LeaseKeeper
from worker.warmup import Warmer

log = logging.getLogger(__name__)

PAUSED_RECHECK_SECONDS = 5.0
# RQ refreshes its worker record (heartbeat, state, suspension check: five round trips) around every job.
# The record lives for minutes (worker_ttl); at hundreds of runs a second once a second is plenty.
RQ_BOOKKEEPING_SECONDS = 1.0


ROUTE_RECHECK_SECONDS = 5


def queue_names(settings: Settings, caps: str, name: str) -> list[str]:
    """The RQ queue a worker takes runs from: its capability set's (dispatcher.routing), or the shared one while
    it has none. One queue: RQ then moves each job with BLMOVE into its intermediate list, which a SIGKILL
    cannot lose (with several it pops with BLPOP); a run whose job was on the queue left behind (the set
    changed) is dispatched again by the reaper after dispatch_timeout."""
    return [route_queue(settings.queue_name, route_of(caps, name, affinity=settings.model_affinity))]


class DispatchWorker(SimpleWorker):  # type: ignore[misc]
    """RQ's SimpleWorker that pops a job only while its pipeline has room and its ComfyUI answers, and keeps
    no per-job records of its own."""

    _beat_at = 0.0
    _suspension_checked_at = 0.0
    _in_job = False

    def heartbeat(self, timeout: int | None = None, pipeline: Any = None) -> None:
        # RQ calls this before each wait for a job (every dequeue_timeout at the most): the moment to follow a
        # change of this worker's capability set to its new route's queue.
        self._listen_to_route(context.current())
        now = time.monotonic()
        if pipeline is None and timeout is None and now - self._beat_at < RQ_BOOKKEEPING_SECONDS:
            return
        self._beat_at = now
        super().heartbeat(timeout, pipeline)

    def serialize(self) -> dict[str, Any]:
        record: dict[str, Any] = super().serialize()
        identity = names.process_identity()
        if identity:  # lets a later life of this worker prove this process dead (worker/names.py)
            record[names.IDENTITY_FIELD] = identity
        return record

    def set_state(self, state: str, pipeline: Any = None) -> None:
        if pipeline is None and state == getattr(self, "_state", None):
            return  # unchanged: no write
        super().set_state(state, pipeline)

    def check_for_suspension(self, burst: bool) -> None:
        now = time.monotonic()
        if now - self._suspension_checked_at >= RQ_BOOKKEEPING_SECONDS:
            self._suspension_checked_at = now
            super().check_for_suspension(burst)

    def execute_job(self, job: Job, queue: Queue) -> None:
        """Call the job's function, and see the job forgotten: off RQ's intermediate list, its hash deleted.

        Our job only claims its run and hands it to a thread of the pipeline, in about a millisecond. RQ's
        own bookkeeping around a job (execution records, started and finished registries, results, a
        WATCH/MULTI for dependents) is a dozen round trips and more CPU than the job: it would hold the GIL
        the runs' threads need while they post, follow and store. None of it is used: the run record is
        the truth (``result_ttl=0`` already discarded RQ's copy), the claim fences duplicates, and the
        reaper finds a worker that died holding a run. RQ still moves the job: BLMOVE into its
        intermediate list, which keeps a job popped by a worker that dies before this point. A run's job
        was not even read: its id says what to call (:mod:`worker.jobs`), and its claim forgets the job in
        the same step (no round trip here for that).
        """
        self._in_job = True
        forgotten = False
        try:
            forgotten = jobs.call(job, queue.intermediate_queue_key)
        except Exception:  # loop boundary: a bug in one claim must not stop the worker taking runs
            log.exception("job %s failed", job.id)
        finally:
            self._in_job = False
            if not forgotten:
                self._forget(job, queue)

    def _forget(self, job: Job, queue: Queue) -> None:
        try:
            with self.connection.pipeline() as pipe:
                pipe.lrem(queue.intermediate_queue_key, 1, job.id)
                pipe.delete(job.key)
                pipe.execute()
        except RedisError as exc:  # RQ's own clean-up of its intermediate list removes it later
            log.warning("job %s not cleared from RQ's lists: %s", job.id, exc)

    def _shutdown(self) -> None:
        # RQ raises StopRequested from its signal handler unless the worker is busy. We never mark the worker
        # busy (execute_job), so a stop during a claim would cut it in half (claimed, never held or run):
        # then it only takes note, and the loop stops once the claim is done.
        if self._in_job:
            self._stop_requested = True
            return
        super()._shutdown()  # type: ignore[no-untyped-call]

    def dequeue_job_and_maintain_ttl(self, timeout: int | None, max_idle_time: int | None = None) -> Any:
        ctx = context.current()
        # The scheduler hands out only as many jobs as ready workers have free slots, so a job we leave in
        # the queue meanwhile goes to a worker with room; RQ's own heartbeat keeps us listed.
        while not ctx.pipeline.wait_for_room(PAUSED_RECHECK_SECONDS):
            self.heartbeat()
            if self._stop_requested:
                return None
        if not ctx.state.healthy.is_set():
            log.warning("paused: ComfyUI %s does not answer; taking no run until it does", ctx.client.base_url)
            # Woken by the heartbeat the moment ComfyUI answers; RQ's own heartbeat keeps us listed meanwhile.
            while not ctx.state.healthy.wait(PAUSED_RECHECK_SECONDS):
                self.heartbeat()
                if self._stop_requested:
                    return None
            log.info("resumed: ComfyUI %s answers again", ctx.client.base_url)
        while not ctx.state.warm.wait(PAUSED_RECHECK_SECONDS):  # warming up (worker.warmup): no run yet
            self.heartbeat()
            if self._stop_requested:
                return None
        return super().dequeue_job_and_maintain_ttl(timeout, max_idle_time)

    @property
    def dequeue_timeout(self) -> int:
        # Each wait for a job ends this often, so a worker whose capability set changed listens to its new
        # route's queue within seconds (RQ's own default waits minutes).
        return ROUTE_RECHECK_SECONDS

    def _listen_to_route(self, ctx: WorkerContext) -> None:
        """Listen to the queue of this worker's capability set (dispatcher.routing), as it is now."""
        names = queue_names(ctx.settings, ctx.state.caps, ctx.name)
        if [q.name for q in self.queues] != names:
            self.queues = [Queue(name, connection=self.connection) for name in names]  # RQ's Job: see run_worker
            self._ordered_queues = self.queues[:]
            log.info("taking runs from %s", ", ".join(names))


def default_name(comfyui_url: str) -> str:
    parts = urlsplit(comfyui_url)
    return f"{socket.gethostname()}-{parts.hostname}-{parts.port or 80}"


def _clear_orphans(ctx: WorkerContext) -> None:
    """Take out of ComfyUI's queue the prompts an earlier life of this worker (same name, so same client id)
    posted and never started: their runs are retried once their leases lapse, maybe on another ComfyUI, and
    a retry here finds its prompt gone and posts it again. One already running is left to finish: a retry
    here takes it over."""
    try:
        queue = ctx.client.queue()
        orphans = [p for p in queue.pending if queue.clients.get(p) == ctx.hub.client_id]
        for prompt_id in orphans:
            ctx.client.delete_pending(prompt_id)
    except ComfyUIError as exc:
        log.warning("could not look for prompts left in ComfyUI's queue by an earlier run of this worker: %s", exc)
        return
    if orphans:
        log.warning("took %d prompt(s) left by an earlier run of this worker out of ComfyUI's queue", len(orphans))


def _hand_back_unpopped(ctx: WorkerContext, queues: list[Queue]) -> None:
    """Runs dispatched to this worker's own queue (model affinity) that it never popped go back to their backlogs
    now, at their old place, for another worker: not after the reaper's dispatch_timeout."""
    own = [q for q in queues if "@" in q.name]
    if not own:
        return
    reaper = Reaper(
        ctx.conns.text,
        ctx.leases,
        dispatch_timeout=ctx.settings.dispatch_timeout,
        retry_base=ctx.settings.retry_base,
        retry_cap=ctx.settings.retry_cap,
    )
    handed = 0
    for queue in own:
        for job_id in queue.get_job_ids():
            run_id, dispatch = run_of_job(job_id) or ("", 0)
            run = ctx.runs.get(run_id) if run_id else None
            if run is not None and run.dispatches == dispatch and reaper.redispatch(run):
                handed += 1
            queue.remove(job_id)
    if handed:
        log.info("handed back %d run(s) dispatched to this worker that it had not taken yet", handed)


def run_worker(settings: Settings, name: str | None = None, *, burst: bool = False) -> None:
    """Serve runs until SIGINT/SIGTERM (the current run finishes first)."""
    worker_name = name or default_name(settings.comfyui_url)
    ctx = WorkerContext.build(settings, worker_name)
    try:
        # Before the first heartbeat: a refused namesake must not write over the live worker's fleet entry,
        # nor remove it as it stops.
        names.claim(ctx.conns.text, worker_name, quiet_seconds=names.quiet_seconds(settings))
    except BaseException:
        ctx.close()
        raise
    context.install(ctx)
    metrics.expose_worker_state(lambda: ctx.state.comfyui_healthy, lambda: len(ctx.pipeline))
    # Before the first heartbeat marks it ready, so the scheduler knows at once what it can run. A ComfyUI down
    # now is read once it answers (the heartbeat); the worker starts anyway.
    capabilities.refresh(ctx)
    if settings.warmup_workflow:
        ctx.state.warm.clear()  # not ready before the warm-up has run (worker.warmup.Warmer)
    heartbeat.beat(ctx)
    _clear_orphans(ctx)
    threads: list[heartbeat.Heartbeat | CancelWatcher | LeaseKeeper | Warmer] = [
        heartbeat.Heartbeat(ctx),
        CancelWatcher(ctx),
        LeaseKeeper(ctx.leases, ctx.pipeline, settings.lease_seconds),
    ]
    if not ctx.state.warm.is_set():
        threads.append(Warmer(ctx))
    for thread in threads:
        thread.start()
    log.info(
        "worker %s: ComfyUI %s, queue %s, pipeline depth %d",
        worker_name,
        settings.comfyui_url,
        settings.queue_name,
        settings.pipeline_depth,
    )
    # RQ's Job, not RunJob: the queues' own reads (the intermediate list's clean-up) must see a missing job as one.
    queues = [Queue(name, connection=ctx.conns.raw) for name in queue_names(settings, ctx.state.caps, worker_name)]
    # RunJob: a run's job is known by its id (worker.jobs); RQ logs its id, not its description (not read).
    rq_worker = DispatchWorker(
        queues, connection=ctx.conns.raw, name=worker_name, job_class=jobs.RunJob, log_job_description=False
    )
    try:
        rq_worker.work(burst=burst, logging_level=settings.log_level)
        heartbeat.drain(ctx)
        try:
            _hand_back_unpopped(ctx, rq_worker.queues)
        except RedisError as exc:  # the reaper hands them back after dispatch_timeout
            log.warning("could not hand back the runs dispatched to this worker: %s", exc)
        # The run executing on ComfyUI is finished; the ones posted behind it go back to their backlogs for
        # another worker, so a stop takes one run's time at most (the grace periods in deploy/ count on it).
        for held in ctx.pipeline.runs():
            held.release.set()
        if len(ctx.pipeline):
            log.info("stopping: finishing the run being executed, handing back the ones waiting behind it")
        # The runs have their own time limits; a second SIGTERM/SIGINT (RQ's cold shutdown) ends this wait.
        while not ctx.pipeline.wait_empty(PAUSED_RECHECK_SECONDS):
            pass
    finally:
        for thread in threads:
            thread.stopped.set()
        heartbeat.forget(ctx)
        ctx.close()
