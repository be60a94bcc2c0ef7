"""Bundled workflows: the folders of ``workflows/``, each a graph and, optionally, its manifest.

A folder holds ``workflow.json`` (a ComfyUI graph) and may hold ``manifest.json``; without one the manifest is
inferred from the graph. Every folder is validated at start-up, so a broken one stops the service there instead
of failing runs later.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from dispatcher.errors import ManifestError
from dispatcher.workflows.manifest import WORKFLOW_ID_RE, Workflow, build_workflow, parse_json

log = logging.getLogger(__name__)

GRAPH_FILE, MANIFEST_FILE = "workflow.json", "manifest.json"


def read_json(path: Path) -> Any:
    """The JSON in ``path``; ManifestError naming the file if it is missing, unreadable or not JSON."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ManifestError(str(path), "file is missing") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(str(path), f"cannot be read: {exc}") from exc
    return parse_json(text, str(path))


def load_workflow(folder: Path) -> Workflow:
    """Load and validate ``folder/workflow.json`` and, if there is one, ``folder/manifest.json``.

    Raises :class:`ManifestError` naming the file (and the parameter or node) for anything wrong.
    """
    manifest_path, graph_path = folder / MANIFEST_FILE, folder / GRAPH_FILE
    if not WORKFLOW_ID_RE.match(folder.name):
        raise ManifestError(str(folder), "a workflow folder name must be url-safe (letters, digits, '.', '_', '-')")
    manifest = read_json(manifest_path) if manifest_path.exists() else None
    graph = read_json(graph_path)
    return build_workflow(
        folder.name, graph, manifest, graph_where=str(graph_path), manifest_where=str(manifest_path), path=folder
    )


def load_folder(directory: Path) -> list[Workflow]:
    """Every workflow folder of ``directory`` (a subfolder with a workflow.json), sorted by id; any broken one
    fails the whole load."""
    if not directory.is_dir():
        raise ManifestError(str(directory), "workflows directory does not exist")
    folders = sorted(p for p in directory.iterdir() if p.is_dir() and (p / GRAPH_FILE).is_file())
    skipped = sorted(p.name for p in directory.iterdir() if p.is_dir() and not (p / GRAPH_FILE).is_file())
    if skipped:
        log.warning("skipping folders of %s without a %s: %s", directory, GRAPH_FILE, ", ".join(skipped))
    return [load_workflow(folder) for folder in folders]
