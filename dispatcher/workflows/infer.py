"""Parameter inference: the manifest a graph without one is given (placeholder until written)."""

from __future__ import annotations

from typing import Any


def infer_manifest(graph: dict[str, Any]) -> dict[str, Any]:
    """The manifest ``graph`` gets when none is given."""
    return {"params": {}}
