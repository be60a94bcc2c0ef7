"""Workflows: ComfyUI graphs with the manifests naming their parameters, bundled or published, and versioned."""

from dispatcher.workflows.bundled import load_workflow
from dispatcher.workflows.manifest import Param, Workflow, build_workflow, is_link
from dispatcher.workflows.registry import PublishedRegistry, Registry, parse_version

__all__ = [
    "Param",
    "PublishedRegistry",
    "Registry",
    "parse_version",
    "Workflow",
    "build_workflow",
    "is_link",
    "load_workflow",
]
