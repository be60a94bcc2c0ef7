"""Published workflows: immutable numbered versions of each workflow, kept in Redis.

A version is written once and never changed: its graph and effective manifest under
``workflow_graphs(id)``, and what is known of it (when, by whom, from where, its digest) under
``workflow_versions(id)``. ``WORKFLOWS`` maps each id to its latest version, negative once retired.
Every write is one script, so two API replicas publishing at once get two versions, never one lost.

Bundled folders are published as version 1 at start (:meth:`WorkflowStore.seed`); a folder edited
since adds a version, unless the latest came from the API (a published version is never overwritten
by files on one host).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any

from redis import Redis

from dispatcher import keys
from dispatcher.errors import WorkflowNotFound

BUNDLED, PUBLISHED = "bundled", "api"

# KEYS: index, graphs, versions. ARGV: id, graph doc, meta doc (without "version"), digest, mode ("put" | "seed").
# Returns {version, created (1 | 0)}: an unchanged graph and manifest add no version.
_PUBLISH = """
local current = redis.call('HGET', KEYS[1], ARGV[1])
if current then
  local n = tonumber(current)
  local meta = cjson.decode(redis.call('HGET', KEYS[3], tostring(math.abs(n))))
  if ARGV[5] == 'seed' then
    if n < 0 then return {n, 0} end
    if meta.digest == ARGV[4] or meta.source ~= 'bundled' then return {n, 0} end
  elseif n > 0 and meta.digest == ARGV[4] then
    return {n, 0}
  end
end
local version = redis.call('HLEN', KEYS[2]) + 1
local meta = cjson.decode(ARGV[3])
meta.version = version
redis.call('HSET', KEYS[2], version, ARGV[2])
redis.call('HSET', KEYS[3], version, cjson.encode(meta))
redis.call('HSET', KEYS[1], ARGV[1], version)
return {version, 1}
"""

# KEYS: index. ARGV: id. Returns the latest version (negative: retired now), or 0 for no such workflow.
_RETIRE = """
local current = redis.call('HGET', KEYS[1], ARGV[1])
if not current then return 0 end
local n = -math.abs(tonumber(current))
redis.call('HSET', KEYS[1], ARGV[1], n)
return n
"""


def digest(graph: dict[str, Any], manifest: dict[str, Any] | None) -> str:
    """The same for the same graph and manifest, whatever the order of their keys."""
    canonical = json.dumps({"graph": graph, "manifest": manifest}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Version:
    """What is known of one version: its number, when it was written, from where and by whom."""

    workflow: str
    version: int
    created_at: float
    source: str  # BUNDLED or PUBLISHED
    digest: str
    inferred: bool  # its manifest was inferred from its graph
    by: str = ""  # the API key that published it

    def describe(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "created_at": self.created_at,
            "source": self.source,
            "digest": self.digest,
            "inferred": self.inferred,
            "published_by": self.by or None,
        }


@dataclass(frozen=True)
class Stored:
    """A version's graph and its effective manifest (given, or inferred when it was published)."""

    graph: dict[str, Any]
    manifest: dict[str, Any]
    inferred: bool


@dataclass(frozen=True)
class Published:
    version: int
    created: bool  # False: the latest version had the same graph and manifest already


class WorkflowStore:
    """Reads and writes published workflow versions (see the module's docstring)."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._publish = redis.register_script(_PUBLISH)
        self._retire = redis.register_script(_RETIRE)

    def publish(
        self,
        workflow_id: str,
        stored: Stored,
        *,
        source_digest: str,
        source: str = PUBLISHED,
        by: str = "",
        seed: bool = False,
    ) -> Published:
        """Write a new version (or none, when the latest has ``source_digest`` already); with ``seed``, the
        rules of a bundled folder at start (see the module's docstring)."""
        doc = json.dumps({"graph": stored.graph, "manifest": stored.manifest, "inferred": stored.inferred})
        meta = json.dumps(
            {
                "created_at": time.time(),
                "source": source,
                "digest": source_digest,
                "inferred": stored.inferred,
                "by": by,
            }
        )
        index = [keys.WORKFLOWS, keys.workflow_graphs(workflow_id), keys.workflow_versions(workflow_id)]
        version, created = self._publish(
            keys=index, args=[workflow_id, doc, meta, source_digest, "seed" if seed else "put"]
        )
        return Published(abs(int(version)), bool(created))

    def retire(self, workflow_id: str) -> bool:
        """Retire the workflow (new runs refused; queued ones still run). False if there is no such workflow."""
        return int(self._retire(keys=[keys.WORKFLOWS], args=[workflow_id])) != 0

    def latest(self, workflow_id: str) -> int | None:
        """The latest version, negative if retired; None if there is no such workflow."""
        value = self.redis.hget(keys.WORKFLOWS, workflow_id)
        return int(value) if value is not None else None

    def index(self) -> dict[str, int]:
        """Every workflow id and its latest version (negative: retired)."""
        return {str(k): int(v) for k, v in self.redis.hgetall(keys.WORKFLOWS).items()}

    def stored(self, workflow_id: str, version: int) -> Stored:
        """A version's graph and manifest; WorkflowNotFound if there is no such version."""
        raw = self.redis.hget(keys.workflow_graphs(workflow_id), str(version))
        if raw is None:
            raise WorkflowNotFound(workflow_id, version)
        doc = json.loads(raw)
        return Stored(doc["graph"], doc["manifest"], bool(doc.get("inferred")))

    def versions(self, workflow_id: str) -> list[Version]:
        """Every version of a workflow, oldest first; empty if there is no such workflow."""
        raw = self.redis.hgetall(keys.workflow_versions(workflow_id))
        found = [_version(workflow_id, json.loads(doc)) for doc in raw.values()]
        return sorted(found, key=lambda v: v.version)

    def version(self, workflow_id: str, version: int) -> Version | None:
        raw = self.redis.hget(keys.workflow_versions(workflow_id), str(version))
        return _version(workflow_id, json.loads(raw)) if raw is not None else None


def _version(workflow_id: str, doc: dict[str, Any]) -> Version:
    return Version(
        workflow=workflow_id,
        version=int(doc["version"]),
        created_at=float(doc["created_at"]),
        source=str(doc["source"]),
        digest=str(doc["digest"]),
        inferred=bool(doc.get("inferred")),
        by=str(doc.get("by") or ""),
    )
