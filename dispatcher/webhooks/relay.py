"""Turns the events of runs with callbacks into webhook deliveries on their own RQ queue.

The event scripts append ``(run, event id, type)`` of every event of a run with
callbacks to ``keys.WEBHOOK_EVENTS``. The relay reads that stream in a consumer
group: an entry is acknowledged only once its delivery is on the RQ queue, so an
entry read by a relay that died stays pending and another relay (or this one,
later) claims it after ``MIN_IDLE_MS`` (XAUTOCLAIM). Relaying an entry twice is
harmless: the delivery has the same id and RQ job id, and its attempt is fenced
(:class:`dispatcher.webhooks.deliveries.DeliveryLog`).

Per event: a terminal one goes to the run's ``on_result_url``, any other to its
``on_progress_event_url``, if the run gave one. An entry naming a batch (``batch.done``,
written once by the script that ends a batch's last run) goes to the batch's
``on_batch_done_url`` with its counts. The body is built here, once, so every attempt
sends the same bytes under the same ``webhook-id``.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence

from redis import Redis
from redis.exceptions import RedisError, ResponseError

from dispatcher import keys
from dispatcher.batches import BATCH_DONE, BatchStore
from dispatcher.errors import BatchNotFound
from dispatcher.events import Event
from dispatcher.runs import Output, RunStore
from dispatcher.storage import OutputStore
from dispatcher.webhooks.deliveries import Delivery
from dispatcher.webhooks.payloads import (
    CallbackKind,
    api_output_url,
    batch_payload,
    callback_for,
    encode,
    progress_payload,
    result_payload,
    webhook_id,
)

log = logging.getLogger(__name__)

BATCH = 100
BLOCK_MS = 1000
MIN_IDLE_MS = 30_000  # an entry pending this long belongs to a relay presumed dead
RECLAIM_INTERVAL = 10.0
FORGET_CONSUMER_MS = 24 * 3600 * 1000  # consumers idle this long with nothing pending are removed from the group

Enqueue = Callable[[Delivery], None]
Entry = tuple[str, dict[str, str]]


class Relay:
    """Reads ``keys.WEBHOOK_EVENTS`` in the group ``keys.WEBHOOK_GROUP`` and enqueues a delivery per event."""

    def __init__(
        self,
        redis: Redis,
        enqueue: Enqueue,
        *,
        public_url: str = "",
        store: OutputStore | None = None,
        consumer: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.redis = redis  # decode_responses=True
        self.enqueue = enqueue
        self.runs = RunStore(redis)
        self.batches = BatchStore(redis, ttl_seconds=0)  # read only here
        self.store = store
        self.api_url = api_output_url(public_url)  # public_url empty: relative /v1/runs/... URLs
        self.consumer = consumer or f"{socket.gethostname()}-{os.getpid()}"
        self.clock = clock
        self.stopping = threading.Event()

    def ensure_group(self) -> None:
        """Create the group (reading from the stream's start, so nothing written before is missed)."""
        try:
            self.redis.xgroup_create(keys.WEBHOOK_EVENTS, keys.WEBHOOK_GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def poll(self, block_ms: int = BLOCK_MS) -> int:
        """Relay the next new entries (waiting up to ``block_ms`` for some); how many were read."""
        answer = self.redis.xreadgroup(
            keys.WEBHOOK_GROUP, self.consumer, {keys.WEBHOOK_EVENTS: ">"}, count=BATCH, block=block_ms
        )
        streams: list[tuple[str, list[Entry]]] = answer or []  # type: ignore[assignment]
        entries = [entry for _, stream_entries in streams for entry in stream_entries]
        self._relay(entries)
        return len(entries)

    def reclaim(self, min_idle_ms: int = MIN_IDLE_MS) -> int:
        """Take over entries left pending by a relay presumed dead, and relay them; how many."""
        claimed = 0
        cursor = "0-0"
        while True:
            reply = self.redis.xautoclaim(
                keys.WEBHOOK_EVENTS, keys.WEBHOOK_GROUP, self.consumer, min_idle_ms, start_id=cursor, count=BATCH
            )
            cursor, entries = reply[0], [e for e in reply[1] if e[1] is not None]  # type: ignore[index]
            self._relay(entries)
            claimed += len(entries)
            if cursor == "0-0":
                break
        if claimed:
            log.warning("relayed %d webhook event(s) left pending by a stopped relay", claimed)
        self._forget_idle_consumers()
        return claimed

    def run(self) -> None:
        """Relay until ``stopping`` is set; Redis errors are waited out (Redis restarting, a failover)."""
        log.info("webhook relay %s: reading %s", self.consumer, keys.WEBHOOK_EVENTS)
        last_reclaim = 0.0
        while not self.stopping.is_set():
            try:
                if last_reclaim == 0.0:
                    self.ensure_group()
                if time.monotonic() - last_reclaim >= RECLAIM_INTERVAL:
                    self.reclaim()
                    last_reclaim = time.monotonic()
                self.poll()
            except RedisError as exc:
                log.warning("webhook relay: Redis error (%s); retrying in 1s", exc)
                self.stopping.wait(1.0)
            except Exception:  # the relay thread must not die: whatever failed stays pending, tried again
                log.exception("webhook relay: unexpected error; retrying in 1s")
                self.stopping.wait(1.0)

    def _relay(self, entries: Sequence[Entry]) -> None:
        done: list[str] = []
        for entry_id, fields in entries:
            try:
                self.handle(fields)
            except (ValueError, TypeError, KeyError) as exc:  # malformed: it never will be sent, so let it go
                log.error("webhook event entry %s %s cannot be relayed: %r", entry_id, fields, exc)
            done.append(entry_id)
        if done:
            self.redis.xack(keys.WEBHOOK_EVENTS, keys.WEBHOOK_GROUP, *done)

    def handle(self, fields: dict[str, str]) -> Delivery | None:
        """Enqueue the delivery of one stream entry; the delivery, or None when nothing is to be sent."""
        if fields.get("batch"):
            return self._batch_done(fields["batch"])
        run_id, event_id, kind = fields.get("run", ""), fields.get("event", ""), fields.get("type", "")
        run = self.runs.get(run_id) if run_id else None
        if run is None:
            log.info("webhook event %s of run %s: the run is gone; nothing sent", event_id, run_id or "?")
            return None
        target = callback_for(kind, run.callbacks)
        if target is None:
            return None
        callback, url = target
        event = self._event(run_id, event_id, kind)
        if callback is CallbackKind.RESULT:
            payload = result_payload(run_id, event, run.outputs, self._url_for)
        else:
            payload = progress_payload(run_id, event, self._url_for)
        delivery = Delivery(
            webhook_id=webhook_id(run_id, event_id),
            run_id=run_id,
            tenant=run.tenant,
            event=kind,
            url=url,
            body=encode(payload).decode(),
            first_at=self.clock(),
        )
        self.enqueue(delivery)
        return delivery

    def _batch_done(self, batch_id: str) -> Delivery | None:
        tenant: str | None = self.redis.hget(keys.batch(batch_id), "tenant")  # type: ignore[assignment]
        try:
            batch = self.batches.get(batch_id, tenant or "")
        except BatchNotFound:
            log.info("batch.done of batch %s: the batch is gone; nothing sent", batch_id)
            return None
        if not batch.on_done_url:
            return None
        delivery = Delivery(
            webhook_id=f"msg_{batch_id}_done",
            run_id=batch_id,  # the deliveries log of a batch's callback is kept under the batch's id
            tenant=batch.tenant,
            event=BATCH_DONE,
            url=batch.on_done_url,
            body=encode(batch_payload(batch)).decode(),
            first_at=self.clock(),
        )
        self.enqueue(delivery)
        return delivery

    def _event(self, run_id: str, event_id: str, kind: str) -> Event:
        found: list[Entry] = self.redis.xrange(keys.run_events(run_id), event_id, event_id, count=1)  # type: ignore[assignment]
        if not found:  # trimmed from the run's stream already: what the entry itself says is all we have
            return Event(event_id, kind, {})
        _, fields = found[0]
        return Event(event_id, kind, json.loads(fields.get("data") or "{}"))

    def _url_for(self, run_id: str, output: Output) -> str:
        direct = self.store.url(output.key) if self.store is not None else None
        return direct or self.api_url(run_id, output)

    def _forget_idle_consumers(self) -> None:
        # Each relay process is its own consumer (host-pid): without this, restarts pile them up in the group.
        for consumer in self.redis.xinfo_consumers(keys.WEBHOOK_EVENTS, keys.WEBHOOK_GROUP):  # type: ignore[union-attr]
            if consumer["name"] != self.consumer and not consumer["pending"] and consumer["idle"] > FORGET_CONSUMER_MS:
                self.redis.xgroup_delconsumer(keys.WEBHOOK_EVENTS, keys.WEBHOOK_GROUP, consumer["name"])
