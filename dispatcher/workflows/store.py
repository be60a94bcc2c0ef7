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
import uuid
from dataclasses import dataclass
from typing import Any

from redis import Redis

from dispatcher import keys
from dispatcher.errors import WorkflowNotFound

BUNDLED, PUBLISHED = "bundled", "api"

# An index entry is "<version> <epoch>", the version negative once retired. The epoch is made with the first version:
# a workflow written anew after Redis lost it (restarted empty) numbers its versions from 1 again, under a new
# epoch, so what a process built of the old "version 1" is never taken for the new one.
#
# KEYS: index, graphs, versions. ARGV: id, graph doc, meta doc (without "version"), digest, mode ("put" | "seed"),
# a new epoch (used if the workflow has none). Returns {version, created (1 | 0), epoch}: a put of the latest
# version's graph and manifest adds none; a seed (a bundled folder at start) adds one only for a graph and manifest
# never published before and a workflow not retired, and never over a version published through the API.
_PUBLISH = """
local current = redis.call('HGET', KEYS[1], ARGV[1])
local epoch = ARGV[6]
if current then
  local n, e = string.match(current, '^(-?%d+) (%S+)$')
  n = tonumber(n)
  epoch = e
  local meta = cjson.decode(redis.call('HGET', KEYS[3], tostring(math.abs(n))))
  if ARGV[5] == 'seed' then
    if n < 0 or meta.source ~= 'bundled' then return {n, 0, epoch} end
    for _, doc in ipairs(redis.call('HVALS', KEYS[3])) do
      if cjson.decode(doc).digest == ARGV[4] then return {n, 0, epoch} end
    end
  elseif n > 0 and meta.digest == ARGV[4] then
    return {n, 0, epoch}
  end
end
local version = redis.call('HLEN', KEYS[2]) + 1
local meta = cjson.decode(ARGV[3])
meta.version = version
redis.call('HSET', KEYS[2], version, ARGV[2])
redis.call('HSET', KEYS[3], version, cjson.encode(meta))
redis.call('HSET', KEYS[1], ARGV[1], version .. ' ' .. epoch)
return {version, 1, epoch}
"""

# KEYS: index. ARGV: id. Returns the latest version (negative: retired now), or 0 for no such workflow.
_RETIRE = """
local current = redis.call('HGET', KEYS[1], ARGV[1])
if not current then return 0 end
local n, epoch = string.match(current, '^(-?%d+) (%S+)$')
n = -math.abs(tonumber(n))
redis.call('HSET', KEYS[1], ARGV[1], n .. ' ' .. epoch)
return n
"""


def parse_entry(value: str | None) -> Latest | None:
    """An index entry ``"<version> <epoch>"`` (None: no such workflow)."""
    if value is None:
        return None
    number, _, epoch = value.partition(" ")
    return Latest(int(number), epoch)


def entry_text(latest: Latest) -> str:
    """The index entry of ``latest``, as the publish script writes it (``parse_entry``'s inverse)."""
    return f"{latest.version} {latest.epoch}"


@dataclass(frozen=True)
class Latest:
    """A workflow's latest version (negative: retired) and the epoch its versions are numbered in."""

    version: int
    epoch: str

    @property
    def retired(self) -> bool:
        return self.version < 0


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
    epoch: str


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
        mode = "seed" if seed else "put"
        version, created, epoch = self._publish(
            keys=index, args=[workflow_id, doc, meta, source_digest, mode, uuid.uuid4().hex[:12]]
        )
        return Published(abs(int(version)), bool(created), str(epoch))

    def retire(self, workflow_id: str) -> bool:
        """Retire the workflow (new runs refused; queued ones still run). False if there is no such workflow."""
        return int(self._retire(keys=[keys.WORKFLOWS], args=[workflow_id])) != 0

    def latest(self, workflow_id: str) -> Latest | None:
        """The latest version (negative if retired) and its epoch; None if there is no such workflow."""
        return parse_entry(self.redis.hget(keys.WORKFLOWS, workflow_id))  # type: ignore[arg-type]

    def index(self) -> dict[str, Latest]:
        """Every workflow id and its latest version (negative: retired)."""
        entries: dict[str, str] = self.redis.hgetall(keys.WORKFLOWS)  # type: ignore[assignment]
        found = {str(k): parse_entry(v) for k, v in entries.items()}
        return {k: v for k, v in found.items() if v is not None}

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
