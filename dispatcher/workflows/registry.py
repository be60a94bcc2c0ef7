"""The workflows a process knows, by id."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

from dispatcher.errors import ManifestError, WorkflowNotFound
from dispatcher.workflows.bundled import load_folder
from dispatcher.workflows.manifest import Workflow

log = logging.getLogger(__name__)


class Registry:
    """The loaded workflows, by id."""

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

    def get(self, workflow_id: str) -> Workflow:
        """Return the workflow, or raise :class:`WorkflowNotFound`."""
        try:
            return self._workflows[workflow_id]
        except KeyError:
            raise WorkflowNotFound(workflow_id) from None

    def all(self) -> list[Workflow]:
        """Every workflow, sorted by id."""
        return [self._workflows[key] for key in sorted(self._workflows)]

    def __contains__(self, workflow_id: object) -> bool:
        return workflow_id in self._workflows

    def __len__(self) -> int:
        return len(self._workflows)
