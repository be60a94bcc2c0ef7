"""Publishing any body (dispatcher.workflows.publish.unwrap_publication) gives a Workflow or a ManifestError.

``PUT /v1/workflows/{id}`` answers a ManifestError with a 422 naming what is wrong; anything else it raises is
a 500. Hypothesis throws random JSON, ComfyUI's default graph (UI and API format) and txt2img with its manifest
with random values put in random places, and UI graphs built of random nodes and links, at it.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dispatcher.errors import ManifestError
from dispatcher.workflows.manifest import Workflow
from dispatcher.workflows.publish import unwrap_publication

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "workflows"
UI: dict[str, Any] = json.loads((FIXTURES / "default_graph.ui.json").read_text())
API: dict[str, Any] = json.loads((FIXTURES / "default_graph.api.json").read_text())
DEFS: dict[str, Any] = json.loads((FIXTURES / "object_info.json").read_text())

FUZZ = settings(
    max_examples=250,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# Values that broke conversion or inference once: ids int() refuses, bounds and slots out of range, nesting.
TRICKY = st.sampled_from(
    ["²", "9" * 5000, "", "*", "-1", "007", "{" * 200, "a,b,c", -50, -1, 2**64, 10**400, 1.5, float("inf"),
     float("nan"), True, [1], [[1]], {"name": "x"}, [], {}]
)  # fmt: skip
SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12) | TRICKY
JSON = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


def assert_published_or_refused(body: Any) -> None:
    defs = copy.deepcopy(DEFS)
    try:
        workflow = unwrap_publication("x", json.dumps(body), lambda: defs)
    except ManifestError as exc:
        assert exc.detail  # names what is wrong
    else:
        assert isinstance(workflow, Workflow)


def places(document: Any) -> list[tuple[Any, Any]]:
    """Every (container, key) of ``document``, at any depth."""
    found: list[tuple[Any, Any]] = []
    pending = [document]
    while pending:
        container = pending.pop()
        keys = list(container) if isinstance(container, dict) else range(len(container))
        for key in keys:
            found.append((container, key))
            if isinstance(container[key], dict | list):
                pending.append(container[key])
    return found


@st.composite
def mutated(draw: st.DrawFn, base: Any) -> Any:
    """``base`` with 1 to 4 random changes, each anywhere in it: a value replaced (by a tricky value, a scalar or
    any JSON), or taken out."""
    document = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, 4))):
        found = places(document)
        if not found:
            break
        container, key = draw(st.sampled_from(found))
        if draw(st.integers(0, 5)) == 0:
            del container[key]
        else:
            # A copy: sampled_from hands out the same list or dict each time, which a later change could edit.
            container[key] = copy.deepcopy(draw(st.one_of(TRICKY, SCALARS, JSON)))
    return document


NODE_IDS = st.integers(1, 8) | st.sampled_from(["3", "²", "9" * 30, "x"])
LINK_IDS = st.integers(1, 12) | st.sampled_from(["1", [1]])
SLOTS = st.integers(0, 3) | st.sampled_from([-50, 99, "0", None, 1.0])
KINDS = st.sampled_from(["MODEL", "LATENT", "IMAGE", "CLIP", "CONDITIONING", "VAE", "INT", "STRING", "*", "", None])
CLASSES = st.sampled_from(sorted(DEFS)) | st.sampled_from(["Reroute", "PrimitiveNode", "Note", "Unknown"])


@st.composite
def ui_graphs(draw: st.DrawFn) -> dict[str, Any]:
    """A UI graph of random nodes (reroutes, bypassed and muted ones among them) and random links between them."""
    sockets = st.fixed_dictionaries(
        {"name": st.sampled_from(["model", "samples", "clip", "image", "seed", "text", ""]), "type": KINDS},
        optional={
            "link": st.none() | LINK_IDS,
            "widget": st.fixed_dictionaries({"name": st.sampled_from(["seed", "text"])}),
        },
    )
    nodes = st.fixed_dictionaries(
        {"id": NODE_IDS, "type": CLASSES, "mode": st.sampled_from([0, 0, 2, 4])},
        optional={
            "inputs": st.lists(sockets, max_size=4),
            "outputs": st.lists(st.fixed_dictionaries({"type": KINDS}), max_size=3),
            "widgets_values": st.lists(SCALARS | st.sampled_from(["{a|{b|c}}", "x // y"]), max_size=8),
        },
    )
    links = st.lists(st.tuples(LINK_IDS, NODE_IDS, SLOTS, NODE_IDS, SLOTS, KINDS).map(list), max_size=12)
    return {"nodes": draw(st.lists(nodes, max_size=8)), "links": draw(links)}


@FUZZ
@given(JSON)
def test_any_json(body: Any) -> None:
    assert_published_or_refused(body)
    assert_published_or_refused({"graph": body})


@FUZZ
@given(mutated(UI))
def test_the_ui_default_graph_changed_anywhere(graph: dict[str, Any]) -> None:
    assert_published_or_refused(graph)


@FUZZ
@given(mutated({"graph": API, "manifest": None}))
def test_the_api_default_graph_changed_anywhere(body: dict[str, Any]) -> None:
    assert_published_or_refused(body)


@FUZZ
@given(ui_graphs())
def test_ui_graphs_of_random_nodes_and_links(graph: dict[str, Any]) -> None:
    assert_published_or_refused(graph)


WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"
TXT2IMG = {
    "graph": json.loads((WORKFLOWS / "txt2img" / "workflow.json").read_text()),
    "manifest": json.loads((WORKFLOWS / "txt2img" / "manifest.json").read_text()),
}


@FUZZ
@given(mutated(TXT2IMG))
def test_a_graph_and_its_manifest_changed_anywhere(body: dict[str, Any]) -> None:
    assert_published_or_refused(body)
