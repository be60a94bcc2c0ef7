"""UI-format graphs converted to the API format as ComfyUI's editor does (dispatcher.workflows.uiformat, widgets).

The fixtures: ComfyUI's default graph as its editor holds it (ComfyUI_frontend ``src/scripts/defaultGraph.ts``),
the API graph its "Export (API)" gives, and node definitions in ComfyUI 0.3.64's ``/object_info`` shapes.
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

import pytest

from dispatcher.errors import ManifestError, UIFormatError
from dispatcher.workflows.uiformat import is_ui_format, node_order, to_api_format
from dispatcher.workflows.widgets import (
    MAX_PROMPT_DEPTH,
    DynamicPromptTooDeep,
    UnsupportedWidget,
    process_dynamic_prompt,
    widget_layout,
    widget_values,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "workflows"
UI: dict[str, Any] = json.loads((FIXTURES / "default_graph.ui.json").read_text())
API: dict[str, Any] = json.loads((FIXTURES / "default_graph.api.json").read_text())
DEFS: dict[str, Any] = json.loads((FIXTURES / "object_info.json").read_text())


def ui() -> dict[str, Any]:
    return copy.deepcopy(UI)


def node(graph: dict[str, Any], node_id: int) -> dict[str, Any]:
    found: dict[str, Any] = next(n for n in graph["nodes"] if n["id"] == node_id)
    return found


def add_node(graph: dict[str, Any], node_id: int, class_type: str, **fields: Any) -> dict[str, Any]:
    entry = {"id": node_id, "type": class_type, "mode": 0, "inputs": [], "outputs": [], "properties": {}, **fields}
    graph["nodes"].append(entry)
    return entry


def relink(graph: dict[str, Any], link_id: int, origin: int, slot: int, kind: str = "*") -> None:
    """Point link ``link_id`` (keeping its target) at ``origin``'s output ``slot``."""
    for row in graph["links"]:
        if row[0] == link_id:
            row[1], row[2], row[5] = origin, slot, kind


def add_link(graph: dict[str, Any], link_id: int, origin: int, slot: int, target: int, target_slot: int) -> None:
    graph["links"].append([link_id, origin, slot, target, target_slot, "*"])


# --- the default graph ------------------------------------------------------------------------------------------


def test_the_default_graph_converts_to_exactly_its_api_export() -> None:
    converted = to_api_format(ui(), DEFS)
    assert converted == API
    assert json.dumps(converted) == json.dumps(API)  # same order of nodes and inputs, same number forms


@pytest.mark.parametrize(
    ("graph", "expected"),
    [
        (UI, True),
        (API, False),
        ({"nodes": [], "links": []}, True),
        ({"nodes": []}, False),
        ({"nodes": {}, "links": []}, False),
        ([], False),
        ("nodes", False),
    ],
    ids=["ui", "api", "empty ui", "no links", "nodes not a list", "list", "string"],
)
def test_is_ui_format(graph: Any, expected: bool) -> None:
    assert is_ui_format(graph) is expected


@pytest.mark.parametrize("definitions", [None, {}], ids=["none", "empty"])
def test_without_node_definitions_a_ui_graph_is_refused_with_how_to_export(definitions: Any) -> None:
    with pytest.raises(UIFormatError) as caught:
        to_api_format(ui(), definitions, where="my.json")
    assert isinstance(caught.value, ManifestError) and caught.value.path == "my.json"
    assert "Export (API)" in caught.value.detail and "--comfyui-url" in caught.value.detail
    assert "\n" not in str(caught.value)


def test_a_node_class_the_definitions_lack_is_named() -> None:
    definitions = {k: v for k, v in DEFS.items() if k != "VAEDecode"}
    with pytest.raises(UIFormatError, match=r"node 8 is a 'VAEDecode', which the ComfyUI's node definitions do not"):
        to_api_format(ui(), definitions)


# --- titles, notes, groups, muted and bypassed nodes, reroutes, primitives --------------------------------------


def test_a_title_names_the_node_and_notes_and_groups_are_dropped() -> None:
    graph = ui()
    node(graph, 6)["title"] = "Positive"
    add_node(graph, 20, "Note", widgets_values=["remember the seed"])
    add_node(graph, 21, "MarkdownNote", widgets_values=["# hi"])
    graph["groups"] = [{"title": "Sampling", "bounding": [0, 0, 100, 100]}]
    converted = to_api_format(graph, DEFS)
    assert converted["6"]["_meta"] == {"title": "Positive"} and set(converted) == set(API)


def test_a_muted_node_is_left_out_with_the_inputs_it_fed() -> None:
    graph = ui()
    node(graph, 8)["mode"] = 2  # VAEDecode
    converted = to_api_format(graph, DEFS)
    assert "8" not in converted and converted["9"]["inputs"] == {"filename_prefix": "ComfyUI"}


def test_a_bypassed_node_passes_its_input_of_the_same_type_on() -> None:
    graph = ui()
    # Checkpoint -> LoraLoader (bypassed) -> KSampler.model and both CLIPTextEncode.clip
    add_node(
        graph, 10, "LoraLoader", mode=4,
        inputs=[{"name": "model", "type": "MODEL", "link": 20}, {"name": "clip", "type": "CLIP", "link": 21}],
        outputs=[{"name": "MODEL", "type": "MODEL", "links": [1]}, {"name": "CLIP", "type": "CLIP", "links": [3, 5]}],
        widgets_values=["add_detail.safetensors", 1, 1],
    )  # fmt: skip
    add_link(graph, 20, 4, 0, 10, 0)
    add_link(graph, 21, 4, 1, 10, 1)
    relink(graph, 1, 10, 0)
    relink(graph, 3, 10, 1)
    relink(graph, 5, 10, 1)
    assert to_api_format(graph, DEFS) == API


def test_a_bypassed_node_with_no_input_of_the_type_feeds_nothing() -> None:
    graph = ui()
    add_node(graph, 10, "ImageInvert", mode=4, inputs=[{"name": "image", "type": "IMAGE", "link": None}],
             outputs=[{"name": "IMAGE", "type": "IMAGE", "links": [9]}])  # fmt: skip
    relink(graph, 9, 10, 0)
    assert to_api_format(graph, DEFS)["9"]["inputs"] == {"filename_prefix": "ComfyUI"}


def test_reroutes_are_followed_through() -> None:
    graph = ui()
    add_node(graph, 30, "Reroute", inputs=[{"name": "", "type": "*", "link": 40}],
             outputs=[{"name": "", "type": "LATENT", "links": [41]}])  # fmt: skip
    add_node(graph, 31, "Reroute", inputs=[{"name": "", "type": "*", "link": 41}],
             outputs=[{"name": "", "type": "LATENT", "links": [7]}])  # fmt: skip
    add_link(graph, 40, 3, 0, 30, 0)
    add_link(graph, 41, 30, 0, 31, 0)
    relink(graph, 7, 31, 0)
    assert to_api_format(graph, DEFS) == API


def test_a_primitive_node_gives_its_value_to_the_widget_it_feeds() -> None:
    graph = ui()
    sampler = node(graph, 3)
    sampler["inputs"].append({"name": "seed", "type": "INT", "widget": {"name": "seed"}, "link": 50})
    add_node(graph, 40, "PrimitiveNode", outputs=[{"name": "INT", "type": "INT", "links": [50],
             "widget": {"name": "seed"}}], widgets_values=[42, "fixed"])  # fmt: skip
    add_link(graph, 50, 40, 0, 3, 4)
    converted = to_api_format(graph, DEFS)
    assert converted["3"]["inputs"]["seed"] == 42 and "40" not in converted
    assert list(converted["3"]["inputs"])[:2] == ["seed", "steps"]  # in its widget's place


def test_a_widget_converted_to_an_input_takes_the_link() -> None:
    graph = ui()
    node(graph, 3)["inputs"].append({"name": "seed", "type": "INT", "widget": {"name": "seed"}, "link": 51})
    add_node(graph, 41, "PrimitiveInt", outputs=[{"name": "INT", "type": "INT", "links": [51]}],
             widgets_values=[7, "fixed"])  # fmt: skip
    add_link(graph, 51, 41, 0, 3, 4)
    converted = to_api_format(graph, DEFS)
    assert converted["3"]["inputs"]["seed"] == ["41", 0] and converted["41"]["inputs"] == {"value": 7}


def test_links_may_be_objects() -> None:
    graph = ui()
    keys = ("id", "origin_id", "origin_slot", "target_id", "target_slot", "type")
    graph["links"] = [dict(zip(keys, row, strict=True)) for row in graph["links"]]
    assert to_api_format(graph, DEFS) == API


# --- widget values ------------------------------------------------------------------------------------------------


def test_load_image_sends_its_file_not_its_upload_button() -> None:
    graph = {"nodes": [], "links": []}
    add_node(graph, 1, "LoadImage", widgets_values=["example.png", "image"],
             outputs=[{"name": "IMAGE", "type": "IMAGE", "links": []}])  # fmt: skip
    assert to_api_format(graph, DEFS)["1"] == {
        "inputs": {"image": "example.png"},
        "class_type": "LoadImage",
        "_meta": {"title": "Load Image"},
    }


def test_missing_widget_values_take_the_definition_defaults() -> None:
    graph = ui()
    del node(graph, 5)["widgets_values"]
    node(graph, 3)["widgets_values"] = [1, "fixed", 30]  # a definition that gained widgets since the save
    converted = to_api_format(graph, DEFS)
    assert converted["5"]["inputs"] == {"width": 512, "height": 512, "batch_size": 1}
    assert converted["3"]["inputs"]["steps"] == 30 and converted["3"]["inputs"]["cfg"] == 8.0
    assert converted["3"]["inputs"]["sampler_name"] == "euler" and converted["3"]["inputs"]["scheduler"] == "simple"


def test_more_widget_values_than_widgets_is_refused() -> None:
    graph = ui()
    node(graph, 5)["widgets_values"] = [512, 512, 1, "extra"]
    with pytest.raises(UIFormatError, match=r"node 5 \(EmptyLatentImage\) has 4 widget values but its definition"):
        to_api_format(graph, DEFS)


def test_list_values_are_wrapped_so_they_do_not_read_as_links() -> None:
    graph = ui()
    node(graph, 7)["widgets_values"] = [["a", "b"]]
    assert to_api_format(graph, DEFS)["7"]["inputs"]["text"] == {"__value__": ["a", "b"]}


def test_prompt_widgets_are_processed_as_dynamic_prompts() -> None:
    graph = ui()
    node(graph, 6)["widgets_values"] = ["a cat // not this\n/* nor this */on a {red|red} mat \\{x\\}"]
    assert to_api_format(graph, DEFS)["6"]["inputs"]["text"] == "a cat \non a red mat {x}"


def test_widgets_values_saved_by_name() -> None:
    graph = ui()
    node(graph, 5)["widgets_values"] = {"height": 768, "width": 640}
    assert to_api_format(graph, DEFS)["5"]["inputs"] == {"width": 640, "height": 768, "batch_size": 1}


INT_SEED = ["INT", {"default": 0, "min": 0, "max": 10}]


def definition(**inputs: Any) -> dict[str, Any]:
    return {"input": {"required": inputs}, "input_order": {"required": list(inputs)}}


@pytest.mark.parametrize(
    ("class_type", "inputs", "layout"),
    [
        ("KSampler", None, ["seed", None, "steps", "cfg", "sampler_name", "scheduler", "denoise"]),
        ("LoadImage", None, ["image", None]),
        ("X", {"seed": INT_SEED}, ["seed", None]),
        ("X", {"noise_seed": INT_SEED}, ["noise_seed", None]),
        ("X", {"seed": ["INT", {"control_after_generate": False}]}, ["seed"]),
        ("X", {"value": ["INT", {"control_after_generate": True}]}, ["value", None]),
        ("X", {"pick": [["a", "b"], {"control_after_generate": True}]}, ["pick", None, None]),
        ("X", {"pick": ["COMBO", {"options": ["a"], "remote": {"refresh_button": True}}]}, ["pick", None, None]),
        ("X", {"image": ["IMAGE", {}], "text": ["STRING", {"forceInput": True}], "flag": ["BOOLEAN", {}]}, ["flag"]),
        ("LoadAudio", {"audio": [["a.wav"], {"audio_upload": True}]}, ["audio", None, None]),
        ("X", {"clip": ["CUSTOM_TYPE", {}]}, []),
    ],
    ids=[
        "KSampler",
        "LoadImage",
        "seed",
        "noise_seed",
        "control off",
        "control on",
        "combo control",
        "remote",
        "sockets",
        "audio",
        "custom type",
    ],
)
def test_widget_layout(class_type: str, inputs: dict[str, Any] | None, layout: list[str | None]) -> None:
    defined = DEFS[class_type] if inputs is None else definition(**inputs)
    assert [w.name for w in widget_layout(class_type, defined)] == layout


def test_widget_layout_refuses_widgets_filled_at_queue_time() -> None:
    with pytest.raises(UnsupportedWidget, match="'image' is a WEBCAM widget"):
        widget_layout("WebcamCapture", definition(image=["WEBCAM", {}]))


def test_saves_older_than_frontend_1_16_held_a_slot_per_forced_input() -> None:
    defined = definition(text=["STRING", {"forceInput": True}], steps=["INT", {"default": 1}])
    pairs, problem = widget_values("X", defined, ["", 9])
    assert problem is None and [(w.name, v) for w, v in pairs] == [("steps", 9)]


class Picks:
    """A ``Math.random`` stand-in returning the given values in turn."""

    def __init__(self, *values: float) -> None:
        self.values = list(values)

    def __call__(self) -> float:
        return self.values.pop(0)


@pytest.mark.parametrize(
    ("text", "picks", "expected"),
    [
        ("plain", (), "plain"),
        ("{a|b|c}", (0.5,), "b"),
        ("{a|b|c}", (0.99,), "c"),
        ("x {a|{b|c}} y", (0.9, 0.1), "x b y"),
        ("keep // gone", (), "keep "),
        ("a /* gone\nstill */b", (), "a b"),
        ("\\{a|b\\}", (), "{a|b}"),
        ("\\n stays", (), "\\n stays"),
        ("{|x}", (0.1,), ""),
        ("a {b|c", (0.9,), "a c"),
        ("a} | {b}", (0.1,), "a} | b"),
        ("{a\\|b|c}", (0.1,), "a|b"),
        ("{x{a|b}y|z}", (0.1, 0.9), "xby"),
        ("{a|{b|c}}|{d}", (0.9, 0.9, 0.5), "c|d"),
        ("{\\\\}", (0.5,), "\\\\"),
        ("{" * MAX_PROMPT_DEPTH + "a" + "}" * MAX_PROMPT_DEPTH, (0.5,) * MAX_PROMPT_DEPTH, "a"),
    ],
    ids=[
        "plain",
        "middle",
        "last",
        "nested",
        "line comment",
        "block comment",
        "escaped",
        "other escape",
        "empty",
        "unclosed",
        "outside a group",
        "escaped bar",
        "nested in text",
        "picks in order",
        "escaped backslash",
        "deepest",
    ],
)
def test_process_dynamic_prompt(text: str, picks: tuple[float, ...], expected: str) -> None:
    assert process_dynamic_prompt(text, Picks(*picks)) == expected


@pytest.mark.parametrize(
    "text",
    ["{" * 600 + "a" + "}" * 600, "{" * 20000, "{" * (MAX_PROMPT_DEPTH + 1) + "a"],
    ids=["600 levels", "20,000 unclosed", "one too many"],
)
def test_a_dynamic_prompt_nested_too_deep_is_refused(text: str) -> None:
    with pytest.raises(DynamicPromptTooDeep, match=f"nest deeper than {MAX_PROMPT_DEPTH} levels"):
        process_dynamic_prompt(text, Picks())
    graph = ui()
    node(graph, 6)["widgets_values"] = [text]
    with pytest.raises(UIFormatError, match=r"node 6 \(CLIPTextEncode\) text: its \{a\|b\} choices nest deeper"):
        to_api_format(graph, DEFS)


@pytest.mark.parametrize(
    "text",
    [
        "a {red|{blue|green}} cat, // c\n \\{x\\} " * 27000,
        "{a|b} " * 170000,
        "{" + "|" * 1_000_000 + "}",
        "{a|" * 99 + "x" * 1_000_000,
    ],
    ids=["prompt", "many groups", "many options", "deep and long"],
)
def test_a_megabyte_prompt_is_processed_in_linear_time(text: str) -> None:
    started = time.perf_counter()
    process_dynamic_prompt(text, lambda: 0.5)
    assert time.perf_counter() - started < 1.0  # adding strings a character at a time took minutes


# --- refused --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "detail"),
    [
        (lambda g: g.update(definitions={"subgraphs": [{"id": "abc"}]}), "uses subgraphs"),
        (lambda g: g.update(extra={"groupNodes": {"G": {}}}), "uses group nodes"),
        (lambda g: node(g, 5).update(type="workflow>G"), "node 5 is a group node"),
        (lambda g: g["links"].pop(0), "names link 1, which is not in the links"),
        (lambda g: relink(g, 9, 99, 0), "linked from node 99, which does not exist"),
        (lambda g: g["nodes"].append({"id": 9, "type": "SaveImage"}), "node id 9 appears twice"),
        (lambda g: g["nodes"].append({"type": "SaveImage"}), "every node needs an id and a type"),
        (lambda g: g["links"].append("x"), "a link must be"),
        (lambda g: [n.update(mode=2) for n in g["nodes"]], "has no node to run"),
    ],
    ids=[
        "subgraphs",
        "group nodes",
        "group node type",
        "missing link",
        "missing origin",
        "duplicate id",
        "no id",
        "bad link",
        "all muted",
    ],
)
def test_refused_graphs_say_why(change: Any, detail: str) -> None:
    graph = ui()
    change(graph)
    with pytest.raises(UIFormatError) as caught:
        to_api_format(graph, DEFS, where="w.json")
    assert detail in caught.value.detail and caught.value.path == "w.json"


def test_a_loop_of_reroutes_is_refused() -> None:
    graph = ui()
    add_node(graph, 30, "Reroute", inputs=[{"name": "", "type": "*", "link": 41}], outputs=[])
    add_node(graph, 31, "Reroute", inputs=[{"name": "", "type": "*", "link": 40}], outputs=[])
    add_link(graph, 40, 30, 0, 31, 0)
    add_link(graph, 41, 31, 0, 30, 0)
    relink(graph, 7, 31, 0)
    with pytest.raises(UIFormatError, match="go round in a circle"):
        to_api_format(graph, DEFS)


def first_input(graph: dict[str, Any], node_id: int) -> dict[str, Any]:
    found: dict[str, Any] = node(graph, node_id)["inputs"][0]
    return found


@pytest.mark.parametrize(
    ("change", "detail"),
    [
        (lambda g: first_input(g, 3).update(link=[1]), "'model': its link must be a link id (a number), not a list"),
        (lambda g: g["links"][0].__setitem__(0, [1]), "a link's id must be a number or a string, not a list"),
        (lambda g: g["links"][0].__setitem__(1, {"id": 4}), "link 1: its origin node id must be a number or a string"),
        (lambda g: g["links"][0].__setitem__(2, -50), "link 1: its origin slot must be a whole number from 0, not -50"),
        (lambda g: g["links"][0].__setitem__(2, "0"), "its origin slot must be a whole number from 0, not '0'"),
        (lambda g: g["links"][0].__setitem__(2, True), "its origin slot must be a whole number from 0, not True"),
        (lambda g: g.update(links=5), "links must be a list, not 5"),
        (lambda g: g["nodes"][0].update(inputs=5), "node 7: inputs must be a list of objects, not 5"),
        (lambda g: g["nodes"][0].update(outputs=5), "node 7: outputs must be a list of objects, not 5"),
        (lambda g: g["nodes"][0].update(inputs=["clip"]), "node 7: inputs must be a list of objects, not a list"),
        (lambda g: first_input(g, 3).update(name=[1]), "node 3: an input's name must be a string, not a list"),
        (lambda g: first_input(g, 3).update(type=["MODEL"]), "node 3 input 'model': its type must be a string"),
        (lambda g: first_input(g, 3).update(widget={"name": {}}), "node 3 input 'model': its widget's name must be a"),
        (lambda g: g["nodes"][0].update(id=[7]), "a node's id must be a number or a string, not a list"),
        (lambda g: g["nodes"][0].update(id=7.0), "a node's id must be a number or a string, not 7.0"),
    ],
    ids=[
        "input link a list",
        "link id a list",
        "link origin an object",
        "negative slot",
        "slot a string",
        "slot a boolean",
        "links not a list",
        "inputs not a list",
        "outputs not a list",
        "inputs of strings",
        "input name a list",
        "input type a list",
        "widget name an object",
        "node id a list",
        "node id a float",
    ],
)  # fmt: skip
def test_a_broken_shape_is_refused_naming_what_is_wrong(change: Any, detail: str) -> None:
    graph = ui()
    change(graph)
    with pytest.raises(UIFormatError) as caught:
        to_api_format(graph, DEFS, where="w.json")
    assert detail in caught.value.detail and caught.value.path == "w.json"


@pytest.mark.parametrize(
    ("node_id", "order"),
    [
        ("0", (0, 0, "")),
        ("12", (0, 12, "")),
        ("4294967294", (0, 4294967294, "")),
        ("4294967295", (1, 0, "4294967295")),
        ("9" * 5000, (1, 0, "9" * 5000)),
        ("²", (1, 0, "²")),
        ("٣", (1, 0, "٣")),
        ("007", (1, 0, "007")),
        ("-1", (1, 0, "-1")),
        ("", (1, 0, "")),
    ],
    ids=["zero", "int", "largest index", "beyond", "5,000 digits", "superscript", "arabic-indic", "zeros", "minus",
         "empty"],
)  # fmt: skip
def test_node_order_takes_javascripts_array_indices_first(node_id: str, order: tuple[int, int, str]) -> None:
    assert node_order(node_id) == order


@pytest.mark.parametrize("new_id", ["²", "9" * 5000, "save"], ids=["superscript", "5,000 digits", "a name"])
def test_node_ids_int_refuses_come_after_the_integers(new_id: str) -> None:
    graph = ui()
    node(graph, 9)["id"] = new_id  # SaveImage
    graph["links"][-1][3] = new_id
    converted = to_api_format(graph, DEFS)
    assert list(converted) == ["3", "4", "5", "6", "7", "8", new_id]
    assert converted[new_id] == API["9"]


def chain(graph: dict[str, Any], length: int, bypassed: bool) -> list[dict[str, Any]]:
    """``length`` reroutes (or bypassed LatentUpscaleBy nodes) between the KSampler and the VAEDecode."""
    nodes = []
    for index in range(length):
        node_id, link = 1000 + index, 1000 + index
        if bypassed:
            entry = add_node(graph, node_id, "LatentUpscaleBy", mode=4, widgets_values=["nearest-exact", 1.5],
                             inputs=[{"name": "samples", "type": "LATENT", "link": link}],
                             outputs=[{"name": "LATENT", "type": "LATENT", "links": [link + 1]}])  # fmt: skip
        else:
            entry = add_node(graph, node_id, "Reroute", inputs=[{"name": "", "type": "*", "link": link}],
                             outputs=[{"name": "", "type": "LATENT", "links": [link + 1]}])  # fmt: skip
        add_link(graph, link, 3 if index == 0 else node_id - 1, 0, node_id, 0)
        nodes.append(entry)
    relink(graph, 7, 1000 + length - 1, 0)
    return nodes


DEFS_WITH_UPSCALE = DEFS | {
    "LatentUpscaleBy": {
        "input": {"required": {"samples": ["LATENT"], "upscale_method": [["nearest-exact", "bilinear"]],
                               "scale_by": ["FLOAT", {"default": 1.5}]}},
        "output": ["LATENT"],
    }
}  # fmt: skip


@pytest.mark.parametrize("bypassed", [False, True], ids=["reroutes", "bypassed nodes"])
def test_hundreds_of_reroutes_or_bypassed_nodes_in_a_row_are_followed(bypassed: bool) -> None:
    graph = ui()
    chain(graph, 600, bypassed)
    assert to_api_format(graph, DEFS_WITH_UPSCALE) == API


@pytest.mark.parametrize("bypassed", [False, True], ids=["reroutes", "bypassed nodes"])
def test_a_circle_of_reroutes_or_bypassed_nodes_is_refused(bypassed: bool) -> None:
    graph = ui()
    nodes = chain(graph, 5, bypassed)
    nodes[0]["inputs"][0]["link"] = 99
    add_link(graph, 99, 1004, 0, 1000, 0)  # the last back into the first
    with pytest.raises(UIFormatError, match="links go round in a circle through node 100"):
        to_api_format(graph, DEFS_WITH_UPSCALE)


def test_a_long_chain_feeding_many_inputs_is_followed_once() -> None:
    graph = ui()
    chain(graph, 2000, bypassed=False)
    for index in range(2000):  # each VAEDecode reads the end of the chain: 4 million steps if followed each time
        add_node(graph, 5000 + index, "VAEDecode", inputs=[{"name": "samples", "type": "LATENT", "link": 7},
                 {"name": "vae", "type": "VAE", "link": 8}])  # fmt: skip
    started = time.perf_counter()
    converted = to_api_format(graph, DEFS)
    assert time.perf_counter() - started < 2.0
    assert converted["6999"]["inputs"] == API["8"]["inputs"]


def test_types_of_long_unions_are_compared_in_linear_time() -> None:
    graph = ui()
    nodes = chain(graph, 1, bypassed=True)
    union = ",".join(f"T{index}" for index in range(50000))  # every part against every other: 2.5 billion
    nodes[0]["inputs"][0]["type"] = union
    nodes[0]["outputs"][0]["type"] = union.lower().replace("t", "u")
    started = time.perf_counter()
    assert "samples" not in to_api_format(graph, DEFS_WITH_UPSCALE)["8"]["inputs"]  # no input of the wanted type
    assert time.perf_counter() - started < 1.0
