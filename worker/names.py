"""A worker's name, claimed at start: the record of a dead earlier life is cleared, a live namesake refused.

RQ refuses to register a worker under a name it still lists as active, and a worker that dies without
recording its death (SIGKILL, or Redis stopped first) stays listed for ``worker_ttl`` + 60 s (8 minutes).
Restarting a worker under its name, as ``up``, compose and systemd do, must work at once.

How a dead earlier life is told from a live namesake:

- Seen from the same machine and PID namespace: RQ's record carries the identity of the process that wrote
  it (boot id, PID namespace, pid, start time; :func:`process_identity`). That process is alive exactly when
  a process with that pid and that start time runs; a reused pid has another start time. This is a proof,
  and it takes no wait.
- Seen from elsewhere (another host, a restarted container, a record without the identity): the namesake
  is alive if its own heartbeat (``keys.worker(name)``) changes while we watch (:func:`quiet_seconds`). A
  live worker beats every ``worker_heartbeat`` seconds from a thread of its own, each beat's ComfyUI probe
  taking at most a connect and a read timeout; a name nobody beat for longer than that is taken over. Only
  a process frozen that long (stopped, swapping) could be mistaken for dead.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path

from redis import Redis
from redis.exceptions import WatchError
from rq.worker import Worker
from rq.worker_registration import REDIS_WORKER_KEYS, WORKERS_BY_QUEUE_KEY

from dispatcher import keys
from dispatcher.errors import WorkerNameTaken
from dispatcher.settings import Settings

log = logging.getLogger(__name__)

IDENTITY_FIELD = "cd_process"
"""Our field in RQ's worker record: the identity of the process that registered it."""

WATCH_EVERY_SECONDS = 0.2


class Liveness(StrEnum):
    ALIVE = "alive"
    DEAD = "dead"
    UNKNOWN = "unknown"  # another machine or PID namespace, or /proc cannot tell


def process_identity() -> str | None:
    """``<boot id>/<PID namespace>/<pid>/<start time>`` of this process; None where /proc cannot tell."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        namespace = os.readlink("/proc/self/ns/pid")
        pid = os.getpid()
        start = start_time(pid)
    except OSError:
        return None
    return f"{boot}/{namespace}/{pid}/{start}" if start else None


def start_time(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks after boot); None if no live process has that pid.

    Raises OSError when it cannot tell (``/proc`` hidden or absent).
    """
    try:
        os.kill(pid, 0)  # signal 0 only asks whether the pid exists
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # another user's process: it exists
    stat = Path(f"/proc/{pid}/stat").read_text()
    # The command name (field 2) may hold spaces and parentheses: count the fields after its closing one.
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] in ("Z", "X"):
        return None  # killed, not yet reaped by its parent: dead all the same
    return fields[19]


def liveness(recorded: str | None, here: str | None, started: Callable[[int], str | None] = start_time) -> Liveness:
    """Whether the process with identity ``recorded`` is alive, judged by a process with identity ``here``."""
    if not recorded or not here:
        return Liveness.UNKNOWN
    parts = recorded.split("/")
    if len(parts) != 4 or parts[:2] != here.split("/")[:2] or not parts[2].isdigit() or int(parts[2]) <= 0:
        return Liveness.UNKNOWN  # a pid of another machine or namespace says nothing here (and 0 or -1 are groups)
    try:
        now = started(int(parts[2]))
    except OSError:
        return Liveness.UNKNOWN
    return Liveness.ALIVE if now == parts[3] else Liveness.DEAD


def quiet_seconds(settings: Settings) -> float:
    """The longest a live worker goes between two heartbeats: the pause, a ComfyUI probe that times out on
    connect and on read (``ComfyClient``), and a second for Redis and scheduling."""
    return settings.worker_heartbeat + 2 * settings.comfyui_timeout + 1


def beats_within(redis: Redis, name: str, seconds: float) -> bool:
    """Whether worker ``name``'s own heartbeat (``keys.worker``) changes within ``seconds``; ``redis`` decodes."""
    key = keys.worker(name)
    first = redis.hget(key, "last_seen")
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(WATCH_EVERY_SECONDS)  # start-up only, and only for a namesake this machine cannot see
        seen = redis.hget(key, "last_seen")
        if seen is not None and seen != first:
            return True
    return False


def claim(redis: Redis, name: str, *, quiet_seconds: float) -> None:
    """Leave ``name`` free for RQ to register this worker: clear the record of a dead earlier life of it.

    ``redis`` decodes responses; ``quiet_seconds`` is how long a namesake that cannot be seen from here must
    leave its heartbeat unchanged to count as dead. Raises :class:`WorkerNameTaken` if it is alive.
    """
    key = Worker.redis_worker_namespace_prefix + name
    here = process_identity()
    for _ in range(3):  # the record changed while judged (its owner beat, another life claimed it): judge again
        with redis.pipeline() as pipe:
            pipe.watch(key)  # type: ignore[no-untyped-call]
            record: dict[str, str] = pipe.hgetall(key)  # type: ignore[assignment]
            if not record or "death" in record:
                return
            owner = f"pid {record.get('pid', '?')} on {record.get('hostname', '?')}"
            verdict = liveness(record.get(IDENTITY_FIELD), here)
            if verdict is Liveness.UNKNOWN:
                log.info(
                    "worker name %s is registered by %s: watching its heartbeat for %.0fs", name, owner, quiet_seconds
                )
                verdict = Liveness.ALIVE if beats_within(redis, name, quiet_seconds) else Liveness.DEAD
            if verdict is Liveness.ALIVE:
                raise WorkerNameTaken(name, owner)
            pipe.multi()
            pipe.srem(REDIS_WORKER_KEYS, key)
            for queue in filter(None, record.get("queues", "").split(",")):
                pipe.srem(WORKERS_BY_QUEUE_KEY % queue, key)
            pipe.delete(key)
            try:
                pipe.execute()
            except WatchError:
                continue
        log.warning("worker %s: cleared RQ's record of a dead earlier life of it (%s)", name, owner)
        return
    raise WorkerNameTaken(name, "a process that keeps renewing it")
