"""Capability sets in Redis, and the fleet's view of them.

A worker publishes its ComfyUI's :class:`~dispatcher.routing.capabilities.Capabilities` under their digest
(``keys.capabilities``), once per distinct set, and names the digest in its heartbeat (``caps``); each beat
renews the set's expiry, so a set no live worker has goes away by itself. A set's content never changes under
its digest: a process caches what it read forever.
"""

from __future__ import annotations

import base64
import json
import threading
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from redis import Redis

from dispatcher import keys
from dispatcher.errors import NoCapableWorker
from dispatcher.fleet import WorkerInfo
from dispatcher.routing.capabilities import KNOWN_LOADERS, Capabilities, Gap, Needs, merged_loaders, missing
from dispatcher.settings import Settings


def capability_keys(digest: str) -> tuple[str, str]:
    """The keys of a capability set: its record (JSON) and its items (a set the dispatch script reads); each
    heartbeat of a worker that has it renews both."""
    return keys.capabilities(digest), keys.capabilities(digest) + ":items"


def definitions_key(digest: str) -> str:
    """String: the node definitions (``/object_info``) of the ComfyUI that published a set first, as zlib-compressed
    base64 JSON (a ComfyUI with many custom nodes serves megabytes); renewed with the set. What converts a
    workflow saved in ComfyUI's editor (UI format) to the API format (:mod:`dispatcher.workflows.uiformat`)."""
    return keys.capabilities(digest) + ":object_info"


def capabilities_ttl(settings: Settings) -> int:
    """How long a capability set outlives the last heartbeat that renewed it."""
    return max(int(3 * settings.worker_heartbeat), 30)


class CapabilityStore:
    """Capability sets by digest (``redis`` decodes responses); a set read once is kept in memory."""

    def __init__(self, redis: Redis, *, ttl_seconds: int) -> None:
        self.redis = redis
        self.ttl = ttl_seconds
        self._known: dict[str, Capabilities] = {}
        self._lock = threading.Lock()

    def publish(self, capabilities: Capabilities, definitions: dict[str, Any] | None = None) -> str:
        """Store ``capabilities`` and the ComfyUI's node ``definitions`` (if no worker has yet) and return their
        digest."""
        digest = capabilities.digest()
        record, items = capability_keys(digest)
        defs = definitions_key(digest)
        pipe = self.redis.pipeline(transaction=True)
        if not self.redis.exists(items):
            pipe.set(record, capabilities.to_json())
            for start in range(0, len(capabilities.items()), 1000):
                pipe.sadd(items, *capabilities.items()[start : start + 1000])
        if definitions is not None and not self.redis.exists(defs):
            packed = base64.b64encode(zlib.compress(json.dumps(definitions).encode(), 6)).decode()
            pipe.set(defs, packed)
        for key in (record, items, defs):
            pipe.expire(key, self.ttl)
        pipe.execute()
        with self._lock:
            self._known[digest] = capabilities
        return digest

    def get_many(self, digests: Iterable[str]) -> dict[str, Capabilities]:
        """The sets of ``digests`` that exist (those read before come from memory)."""
        wanted = sorted({d for d in digests if d})
        with self._lock:
            found = {d: self._known[d] for d in wanted if d in self._known}
        unread = [d for d in wanted if d not in found]
        if unread:
            texts: list[str | None] = self.redis.mget([keys.capabilities(d) for d in unread])  # type: ignore[assignment]
            for digest, text in zip(unread, texts, strict=True):
                if text:
                    found[digest] = Capabilities.from_json(text)
            with self._lock:
                self._known.update({d: found[d] for d in unread if d in found})
        return found

    def definitions(self, digests: Iterable[str]) -> dict[str, Any]:
        """The node definitions published with the sets of ``digests``, merged (a class from the first set that
        has it); empty when none was published."""
        merged: dict[str, Any] = {}
        wanted = sorted({d for d in digests if d})
        if not wanted:
            return merged
        packed: list[str | None] = self.redis.mget([definitions_key(d) for d in wanted])  # type: ignore[assignment]
        for text in packed:
            if text:
                for name, spec in json.loads(zlib.decompress(base64.b64decode(text))).items():
                    merged.setdefault(name, spec)
        return merged


@dataclass
class _Derived:
    """What one list of the workers alive can run."""

    workers: list[WorkerInfo]
    sets: dict[str, Capabilities]
    loaders: dict[str, dict[str, str]]
    gaps: dict[str, list[Gap] | None] = field(default_factory=dict)  # by needs: what the nearest set lacks


class FleetCapabilities:
    """What the workers alive can run, for the checks made at submit time."""

    def __init__(self, store: CapabilityStore, workers: Callable[[], list[WorkerInfo]]) -> None:
        self.store = store
        self.workers = workers  # the alive workers (a cached read: dispatcher.scheduling.handout.Handout.workers)
        # What was derived from the last two lists of workers, the newest first (the same list object while the
        # caller's cache holds: a batch of a thousand runs derives it once). Two: a list derived in a thread
        # before its reader publishes it must not push out the one still published.
        self._derived: tuple[_Derived, ...] = ()

    def _view(self) -> _Derived:
        workers = self.workers()
        for derived in self._derived:
            if derived.workers is workers:
                return derived
        return self.prepare(workers)

    def prepare(self, workers: list[WorkerInfo]) -> _Derived:
        """Derive what ``workers`` (a new list of the workers alive) can run, ahead of the checks that will read it
        (``Handout.on_read``: before the list is published)."""
        sets = self.store.get_many(w.caps for w in workers if w.state != "offline")
        loaders = {cls: dict(inputs) for cls, inputs in KNOWN_LOADERS.items()}
        for cls, inputs in merged_loaders(sets.values()).items():
            loaders.setdefault(cls, {}).update(inputs)
        derived = _Derived(workers, sets, loaders)
        self._derived = (derived, *self._derived[:1])
        return derived

    def sets(self) -> dict[str, Capabilities]:
        """The capability sets of the workers alive (those that published one)."""
        return self._view().sets

    def loaders(self) -> dict[str, dict[str, str]]:
        """Which inputs name model files, as the fleet's ComfyUIs say, with ComfyUI's own loaders."""
        return self._view().loaders

    def node_definitions(self) -> dict[str, Any]:
        """What the ComfyUIs of the workers alive serve as ``/object_info``, merged; empty before any published."""
        return self.store.definitions(w.caps for w in self.workers() if w.state != "offline")

    def check(self, workflow: str, needs: Needs) -> None:
        """NoCapableWorker naming what is missing when no set of the fleet covers ``needs``; nothing when one
        does, or when no worker has published a set (a fleet not started yet: nothing to judge by)."""
        view = self._view()
        key = needs.to_text()
        gaps = view.gaps.get(key, ())
        if gaps == ():  # not worked out yet for this view
            gaps = view.gaps[key] = _nearest_gaps(view.sets, needs)
        if gaps:
            raise NoCapableWorker(workflow, [(gap.name, gap.folder) for gap in gaps])

    def lacking(self, needs: Needs) -> list[Gap] | None:
        """None when a ready worker can run ``needs``; else what the nearest ready worker's set lacks (empty when
        no worker that published a set is ready)."""
        workers = [w for w in self.workers() if w.ready]
        if any(not w.caps for w in workers):
            return None  # a worker that published no set takes anything
        sets = self.store.get_many(w.caps for w in workers)
        return _nearest_gaps(sets, needs) if sets else []

    def capable(self, needs: Needs) -> list[WorkerInfo]:
        """The workers alive whose ComfyUI has everything ``needs`` asks for."""
        sets = self.sets()
        return [w for w in self.workers() if w.caps in sets and not missing(sets[w.caps], needs)]


def _nearest_gaps(sets: dict[str, Capabilities], needs: Needs) -> list[Gap] | None:
    """None when a set covers ``needs`` or there is no set; else the gaps of the set that lacks least."""
    if not sets:
        return None
    gaps_by_set = [missing(capabilities, needs) for capabilities in sets.values()]
    if any(not gaps for gaps in gaps_by_set):
        return None
    return min(gaps_by_set, key=lambda gaps: (len(gaps), [str(g) for g in gaps]))
