"""The workflows a process knows, by id: a fixed set (:class:`Registry`), or the published versions in Redis
(:class:`PublishedRegistry`), which every API replica reads alike.

A published version never changes, so each is built (validated) once per process and kept; which version is
the latest is read from Redis at each lookup (one ``HGET``), so a version published through one replica is
the one the next run through any other uses, with no restart and no window.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path

from redis.exceptions import RedisError

from dispatcher.errors import ManifestError, ParameterError, WorkflowNotFound, WorkflowRetired
from dispatcher.workflows.bundled import load_folder
from dispatcher.workflows.manifest import Workflow, build_workflow
from dispatcher.workflows.store import BUNDLED, Latest, Published, Stored, Version, WorkflowStore, digest

log = logging.getLogger(__name__)

BUILT_KEPT = 512  # built versions kept per process (a version is a few kB of graph)


def parse_version(value: object) -> int | None:
    """A run's ``version`` (body field or ``?version=``): None for the latest, else a version number >= 1."""
    if value is None:
        return None
    if isinstance(value, str) and value.isascii() and value.isdecimal() and len(value) <= 10:
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ParameterError("version", "must be a workflow version number (an integer >= 1)")
    return value


class Registry:
    """A fixed set of workflows, by id (tests, tools; the API publishes its bundled set: PublishedRegistry)."""

    def __init__(self, workflows: Iterable[Workflow] = ()) -> None:
        self._workflows: dict[str, Workflow] = {}
        for workflow in workflows:
            if workflow.id in self._workflows:
                raise ManifestError(str(workflow.path), f"workflow id {workflow.id!r} is used twice")
            self._workflows[workflow.id] = workflow

    @classmethod
    def load(cls, directory: Path) -> Registry:
        """Load every workflow folder of ``directory``; any broken one fails the whole load."""
        registry = cls(load_folder(directory))
        log.info("loaded %d workflows from %s: %s", len(registry), directory, ", ".join(registry._workflows))
        return registry

    def get(self, workflow_id: str, version: int | None = None) -> Workflow:
        """The workflow (its latest version, or ``version``), or raise :class:`WorkflowNotFound`."""
        workflow = self._workflows.get(workflow_id)
        if workflow is None:
            raise WorkflowNotFound(workflow_id)
        if version is not None and version != workflow.version:
            raise WorkflowNotFound(workflow_id, version)
        return workflow

    def all(self) -> list[Workflow]:
        """Every workflow that takes runs (its latest version), sorted by id."""
        return [self._workflows[key] for key in sorted(self._workflows)]

    def bundled(self) -> list[Workflow]:
        """The workflows this registry was given."""
        return list(self._workflows.values())

    def peek(self, workflow_id: str) -> Workflow | None:
        """The newest version of a workflow this process knows, without I/O (None: none known here)."""
        return self._workflows.get(workflow_id)

    def known(self) -> list[Workflow]:
        """The newest version of each workflow this process knows, without I/O."""
        return list(self._workflows.values())

    def cached(self, workflow_id: str, version: int | None = None) -> tuple[Workflow, Latest] | None:
        """A published workflow as this process last read it, without I/O: the version (the latest when None) and
        the latest version it was read with, which the caller must check is still the latest (the submit script
        does). None when it is not known here; a fixed set publishes nothing, so never."""
        return None

    def __contains__(self, workflow_id: object) -> bool:
        return workflow_id in self._workflows

    def __len__(self) -> int:
        return len(self._workflows)


class PublishedRegistry(Registry):
    """The workflows published in Redis; ``bundled`` are published as their version 1 on first use."""

    def __init__(self, store: WorkflowStore, bundled: Iterable[Workflow] = ()) -> None:
        super().__init__(bundled)
        self.store = store
        # Built versions by (id, epoch, version): a version written anew after Redis lost it has another epoch.
        self._built: OrderedDict[tuple[str, str, int], Workflow] = OrderedDict()
        self._newest: dict[str, tuple[Latest, Workflow]] = {}  # the latest version built of each id (peek, known)
        self._lock = threading.Lock()
        self._seeded = False

    def seed(self) -> None:
        """Publish the bundled workflows (see :meth:`WorkflowStore.publish` with ``seed``); once per process,
        and again after a failure (Redis down at start: the first lookup tries again)."""
        with self._lock:
            if self._seeded:
                return
            for workflow in super().all():
                stored = Stored(workflow.graph, workflow.manifest, workflow.inferred)
                source = digest(workflow.graph, None if workflow.inferred else workflow.manifest)
                done = self.store.publish(workflow.id, stored, source_digest=source, source=BUNDLED, seed=True)
                if done.created:
                    log.info("published bundled workflow %s as version %d", workflow.id, done.version)
            self._seeded = True

    def publish(self, workflow: Workflow, *, by: str = "") -> tuple[Workflow, Published]:
        """Store ``workflow`` (built by :func:`build_workflow`, so valid) as a new version, unless its graph and
        manifest are those of the latest; returns it as stored and what was done."""
        self._latest(workflow.id)  # the bundled ones first (again, if Redis lost them): they are version 1
        stored = Stored(workflow.graph, workflow.manifest, workflow.inferred)
        source = digest(workflow.graph, None if workflow.inferred else workflow.manifest)
        done = self.store.publish(workflow.id, stored, source_digest=source, by=by)
        return self._build(workflow.id, Latest(done.version, done.epoch), done.version), done

    def retire(self, workflow_id: str) -> None:
        """Retire a workflow: new runs are refused (410), queued ones still run; WorkflowNotFound if unknown."""
        if self._latest(workflow_id) is None or not self.store.retire(workflow_id):
            raise WorkflowNotFound(workflow_id)
        log.info("workflow %s retired", workflow_id)

    def get(self, workflow_id: str, version: int | None = None) -> Workflow:
        """The latest version of a workflow, or ``version``: WorkflowNotFound if there is none,
        WorkflowRetired if it was retired."""
        latest = self._latest(workflow_id)
        if latest is None:
            raise WorkflowNotFound(workflow_id)
        if latest.retired:
            raise WorkflowRetired(workflow_id)
        if version is not None and version > latest.version:
            raise WorkflowNotFound(workflow_id, version)
        return self._build(workflow_id, latest, latest.version if version is None else version)

    def versions(self, workflow_id: str) -> tuple[int, list[Version]]:
        """The latest version (negative: retired) and every version, oldest first; WorkflowNotFound if none."""
        latest = self._latest(workflow_id)
        if latest is None:
            raise WorkflowNotFound(workflow_id)
        return latest.version, self.store.versions(workflow_id)

    def all(self) -> list[Workflow]:
        self.seed()
        index = self.store.index()
        if not index and super().all():  # Redis lost its data (restarted empty): the bundled ones again
            self._seed_again()
            index = self.store.index()
        live = sorted((wid, latest) for wid, latest in index.items() if not latest.retired)
        return [self._build(wid, latest, latest.version) for wid, latest in live]

    def __contains__(self, workflow_id: object) -> bool:
        if not isinstance(workflow_id, str):
            return False
        latest = self._latest(workflow_id)
        return latest is not None and not latest.retired

    def __len__(self) -> int:
        self.seed()
        return sum(1 for latest in self.store.index().values() if not latest.retired)

    def peek(self, workflow_id: str) -> Workflow | None:
        newest = self._newest.get(workflow_id)
        return newest[1] if newest is not None else super().peek(workflow_id)

    def cached(self, workflow_id: str, version: int | None = None) -> tuple[Workflow, Latest] | None:
        newest = self._newest.get(workflow_id)
        if newest is None:
            return None
        latest, built = newest
        if version is None or version == latest.version:
            return built, latest
        with self._lock:
            other = self._built.get((workflow_id, latest.epoch, version))
        return (other, latest) if other is not None else None

    def peek_latest(self, workflow_id: str) -> Latest | None:
        """Which latest version :meth:`peek` gives (None: a bundled one not looked up yet, or none known)."""
        newest = self._newest.get(workflow_id)
        return newest[0] if newest is not None else None

    def known(self) -> list[Workflow]:
        return list(({w.id: w for w in super().known()} | {k: v[1] for k, v in self._newest.items()}).values())

    def learn(self, workflow_id: str) -> None:
        """Build the latest version of a workflow if there is one (so :meth:`peek` knows it); never raises for a
        workflow that is not there (the request's own lookup says so)."""
        try:
            self.get(workflow_id)
        except (WorkflowNotFound, RedisError):
            pass

    def _latest(self, workflow_id: str) -> Latest | None:
        """The latest version of a workflow, publishing the bundled ones again if Redis lost them (restarted
        empty), so a bundled workflow is never missing."""
        self.seed()
        latest = self.store.latest(workflow_id)
        if latest is None and super().peek(workflow_id) is not None:
            self._seed_again()
            latest = self.store.latest(workflow_id)
        return latest

    def _seed_again(self) -> None:
        with self._lock:
            self._seeded = False
        log.warning("the published workflows are gone from Redis (restarted empty?): publishing the bundled ones again")
        self.seed()

    def _build(self, workflow_id: str, latest: Latest, version: int) -> Workflow:
        key = (workflow_id, latest.epoch, version)
        with self._lock:
            built = self._built.get(key)
            if built is not None:
                self._built.move_to_end(key)
                self._note_newest(workflow_id, latest, version, built)
                return built
        stored = self.store.stored(workflow_id, version)
        where = f"{workflow_id} version {version}"
        # The manifest as published (inferred then, or given): what inference says today does not change it.
        built = build_workflow(
            workflow_id, stored.graph, stored.manifest, graph_where=where, manifest_where=where, version=version
        )
        built = dataclasses.replace(built, inferred=stored.inferred)
        with self._lock:
            self._built[key] = built
            while len(self._built) > BUILT_KEPT:
                self._built.popitem(last=False)
            self._note_newest(workflow_id, latest, version, built)
        return built

    def _note_newest(self, workflow_id: str, latest: Latest, version: int, built: Workflow) -> None:
        if version == latest.version:  # the latest as Redis said it: what peek() answers (for body limits)
            self._newest[workflow_id] = (latest, built)
