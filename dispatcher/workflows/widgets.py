"""How ComfyUI's editor lays out a node's widgets, so a UI-format node's ``widgets_values`` can be read. Pure.

The editor (ComfyUI_frontend) gives a node one widget per input of its definition whose type is a widget type
(INT, FLOAT, BOOLEAN, STRING, a combo), in the definition's ``input_order`` (required, then optional), plus
widgets of its own that hold a slot of ``widgets_values`` but are never sent to ComfyUI (``serialize: false``):

* ``control_after_generate`` after an INT input that has it, or that is named ``seed`` or ``noise_seed``
  (``useIntWidget``); after any other input only when the definition asks, and a combo's then takes a second
  one, its filter list (``addValueControlWidgets``);
* two after a remote combo with a refresh button (its auto-refresh toggle and the button);
* last, the audio player of the audio nodes (``Comfy.AudioWidget``) and the upload button of a node with an
  ``image_upload``/``video_upload``/``animated_image_upload``/``audio_upload`` combo (``Comfy.UploadImage``,
  ``Comfy.UploadAudio``): extensions add them to the definition after the ComfyUI's own inputs.

:func:`widget_values` maps a saved ``widgets_values`` onto that layout as the editor does when it loads a
workflow, including its migration of saves older than frontend 1.16 (a slot per ``forceInput`` input).
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

SIMPLE_TYPES = frozenset({"INT", "FLOAT", "BOOLEAN", "STRING", "MARKDOWN"})
"""Widget types whose value is sent to ComfyUI as saved."""

UNSUPPORTED_TYPES = frozenset(
    {"WEBCAM", "AUDIO_RECORD", "LOAD_3D", "LOAD_3D_ANIMATION", "PREVIEW_3D", "PREVIEW_3D_ANIMATION", "IMAGECOMPARE"}
)
"""Widgets the editor fills at queue time (a camera frame, a recording, a 3-D scene): no saved value stands for
what it would send, so a node with one is refused."""

UPLOAD_FLAGS = ("image_upload", "video_upload", "animated_image_upload", "audio_upload")
AUDIO_UI_CLASSES = frozenset(
    {"LoadAudio", "SaveAudio", "PreviewAudio", "SaveAudioMP3", "SaveAudioOpus", "SaveAudioAdvanced"}
)
SEED_NAMES = ("seed", "noise_seed")
DEFAULTS: dict[str, Any] = {"INT": 0, "FLOAT": 0, "BOOLEAN": False, "STRING": "", "MARKDOWN": ""}


class UnsupportedWidget(ValueError):
    """Raised for a node definition with a widget whose value the editor computes at queue time."""

    def __init__(self, input_name: str, kind: str) -> None:
        super().__init__(f"input {input_name!r} is a {kind} widget, which the editor fills when it queues")
        self.input_name = input_name
        self.kind = kind


@dataclass(frozen=True)
class Widget:
    """One widget of a node: ``name`` None for a slot that is saved but never sent (a control, a button)."""

    name: str | None
    kind: str = ""  # INT, FLOAT, BOOLEAN, STRING, MARKDOWN or COMBO
    options: Mapping[str, Any] = field(default_factory=dict)
    choices: tuple[Any, ...] = ()

    @property
    def default(self) -> Any:
        """The value a widget takes when the saved workflow has none for it (the editor's constructors)."""
        if self.kind == "COMBO":
            if self.options.get("default"):
                return self.options["default"]
            return self.choices[0] if self.choices else None
        return self.options.get("default", DEFAULTS.get(self.kind))

    @property
    def dynamic_prompts(self) -> bool:
        return bool(self.options.get("dynamicPrompts"))


def ordered_inputs(definition: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """``(name, spec)`` of a definition's required then optional inputs, in ``input_order`` where it has one
    (then any input it does not list), as the editor's ``getOrderedInputSpecs``."""
    # Definitions come from a ComfyUI, whose custom nodes may declare anything: odd shapes count as absent.
    inputs = _mapping(definition.get("input"))
    order = _mapping(definition.get("input_order"))
    result: list[tuple[str, Any]] = []
    groups = [_mapping(inputs.get("required")), _mapping(inputs.get("optional"))]
    for specs, listed_order in zip(groups, (order.get("required"), order.get("optional")), strict=True):
        names = listed_order if isinstance(listed_order, list) and listed_order else list(specs)
        result += [(name, specs[name]) for name in names if isinstance(name, str) and name in specs]
    listed = {name for name, _ in result}
    result += [(n, s) for specs in groups for n, s in specs.items() if isinstance(n, str) and n not in listed]
    return result


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def spec_parts(spec: Any) -> tuple[Any, dict[str, Any]]:
    """The type (a name, or a list of choices) and the options of an input spec ``[type, {options}]``."""
    if not isinstance(spec, list | tuple) or not spec:
        return None, {}
    options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    return spec[0], options


def combo_choices(kind: Any, options: Mapping[str, Any]) -> tuple[Any, ...] | None:
    """The choices of a combo input (``[[...], {}]`` or the newer ``["COMBO", {"options": [...]}]``), else None."""
    if isinstance(kind, list):
        return tuple(kind)
    if kind == "COMBO":
        listed = options.get("options")
        return tuple(listed) if isinstance(listed, list) else ()
    return None


def widget_layout(class_type: str, definition: Mapping[str, Any]) -> list[Widget]:
    """The widgets the editor gives a node of ``definition``, one per slot of its ``widgets_values``.

    Raises :class:`UnsupportedWidget` for a widget whose value the editor only knows at queue time.
    """
    layout: list[Widget] = []
    upload = False
    for name, spec in ordered_inputs(definition):
        kind, options = spec_parts(spec)
        if options.get("forceInput"):
            continue  # a socket only, since frontend 1.16
        choices = combo_choices(kind, options)
        if isinstance(kind, str) and kind in UNSUPPORTED_TYPES:
            raise UnsupportedWidget(name, kind)
        if choices is None and not (isinstance(kind, str) and kind in SIMPLE_TYPES):
            continue  # MODEL, IMAGE...: a socket
        widget = Widget(name, "COMBO" if choices is not None else str(kind), options, choices or ())
        layout.append(widget)
        if isinstance(options.get("remote"), Mapping) and options["remote"].get("refresh_button"):
            layout += [Widget(None), Widget(None)]
        # JavaScript's `??`: an explicit false turns the seed default off.
        control = options.get("control_after_generate")
        if widget.kind == "INT" and control is None:
            control = name in SEED_NAMES
        if control:
            layout.append(Widget(None))
            if widget.kind == "COMBO" and not options.get("multi_select"):
                layout.append(Widget(None))
        upload = upload or (widget.kind == "COMBO" and any(options.get(flag) for flag in UPLOAD_FLAGS))
    if class_type in AUDIO_UI_CLASSES:
        layout.append(Widget(None))
    if upload:
        layout.append(Widget(None))
    return layout


def _migrated(definition: Mapping[str, Any], values: list[Any]) -> list[Any]:
    """Frontend 1.16's ``migrateWidgetsValues``: older saves held a slot for every ``forceInput`` input."""
    forced: list[bool] = []
    for _, spec in ordered_inputs(definition):
        kind, options = spec_parts(spec)
        widget = combo_choices(kind, options) is not None or (isinstance(kind, str) and kind in SIMPLE_TYPES)
        if options.get("forceInput") or widget:
            forced.append(bool(options.get("forceInput")))
            if options.get("control_after_generate"):
                forced.append(False)
    if len(forced) != len(values) or not any(forced):
        return values
    return [value for value, drop in zip(values, forced, strict=True) if not drop]


def widget_values(
    class_type: str, definition: Mapping[str, Any], saved: Any
) -> tuple[list[tuple[Widget, Any]], str | None]:
    """Each sent widget with its value from ``saved`` (a node's ``widgets_values``), and a problem or None.

    Missing trailing values take the widget's default, as the editor leaves them (a definition that gained an
    input since the save); more values than widgets is a problem: the node's definition differs from the one
    of the editor that saved it (or an extension added widgets), and guessing which value is which would be
    silently wrong.
    """
    layout = widget_layout(class_type, definition)
    if isinstance(saved, Mapping):  # some custom nodes save their values by name
        return [(w, saved.get(w.name, w.default)) for w in layout if w.name is not None], None
    values = list(saved) if isinstance(saved, list) else []
    if len(values) > len(layout):
        values = _migrated(definition, values)
    if len(values) > len(layout):
        names = ", ".join(w.name or "(control)" for w in layout) or "none"
        problem = f"has {len(values)} widget values but its definition has {len(layout)} widgets ({names})"
        return [], problem
    padded = values + [None] * (len(layout) - len(values))
    sent = [(w, v if i < len(values) else w.default) for i, (w, v) in enumerate(zip(layout, padded, strict=True))]
    return [(w, v) for w, v in sent if w.name is not None], None


_COMMENTS = re.compile(r"/\*[\s\S]*?\*/|//.*")
_ESCAPED = re.compile(r"\\([{}|])")
_ESCAPE = re.compile(r"\\[\s\S]")
_BRACE = re.compile(r"[{}]")
_BAR = re.compile(r"\|")

MAX_PROMPT_DEPTH = 100
"""How deep ``{a|{b|c}}`` choices may nest. The editor recurses once per level; deeper text is refused, not
left unprocessed, so a converted graph never silently differs from the editor's."""


class DynamicPromptTooDeep(ValueError):
    """Raised for a prompt whose ``{a|b}`` choices nest deeper than :data:`MAX_PROMPT_DEPTH`."""

    def __init__(self) -> None:
        super().__init__(f"its {{a|b}} choices nest deeper than {MAX_PROMPT_DEPTH} levels")


def process_dynamic_prompt(text: str, random: Callable[[], float]) -> str:
    """The editor's ``processDynamicPrompt``: strip C-style comments, pick one option of each ``{a|b}`` group
    (``random`` in [0, 1) picks, as ``Math.random``), unescape ``\\{ \\} \\|``.

    Raises :class:`DynamicPromptTooDeep` for choices nested deeper than :data:`MAX_PROMPT_DEPTH`.
    """
    # The editor scans each option it picks again, as a text of its own: it strips comments, picks in its
    # groups and unescapes its result. A picked option is a slice of the stripped text, with the same escapes
    # and its braces matched as in the whole (it ends at a bar or brace of its group's level), and stripping a
    # stripped text changes nothing: so the groups are found in one pass here, and each level only unescapes.
    # Linear, where scanning each option again and adding strings a character at a time was quadratic.
    source = _COMMENTS.sub("", text)
    if "{" not in source:
        return _unescaped(source)
    groups = _Groups(source)
    starts, ends, after = groups.starts, groups.ends, groups.after

    def expand(begin: int, end: int, index: int) -> str:
        """The text from ``begin`` to ``end``, whose first group (if it has one) is number ``index``, processed."""
        pieces: list[str] = []
        while index < len(starts) and starts[index] < end:
            low, high = groups.pick(index, random)
            high = min(high, end)
            pieces.append(source[begin : starts[index]])
            if after[index] > index + 1:  # the option may hold groups of its own
                pieces.append(expand(low, high, bisect.bisect_left(starts, low, index + 1, after[index])))
            else:
                pieces.append(_unescaped(source[low:high]))
            begin, index = ends[index] + 1, after[index]
        pieces.append(source[begin:end])
        return _unescaped("".join(pieces))

    return expand(0, len(source), 0)


def _unescaped(text: str) -> str:
    return _ESCAPED.sub(r"\1", text) if "\\" in text else text


class _Groups:
    """The ``{a|b}`` groups of a text, in order: where each starts and ends (its ``}``, or the end of the text),
    and the number of the first group after it (its nested ones skipped). Escaped characters are no part of it,
    nor a ``}`` outside any group (plain text)."""

    def __init__(self, source: str) -> None:
        # Escapes become two characters of plain text: the scans see only the braces and bars that count.
        self.masked = _ESCAPE.sub("__", source)
        self.starts: list[int] = []
        self.ends: list[int] = []
        self.after: list[int] = []
        starts, ends, after = self.starts, self.ends, self.after
        open_groups: list[int] = []
        for match in _BRACE.finditer(self.masked):  # the one loop over the text: kept lean
            if match[0] == "{":
                if len(open_groups) == MAX_PROMPT_DEPTH:
                    raise DynamicPromptTooDeep()
                open_groups.append(len(starts))
                starts.append(match.start())
                ends.append(len(source))
                after.append(0)
            elif open_groups:
                index = open_groups.pop()
                ends[index], after[index] = match.start(), len(starts)
        for index in open_groups:
            after[index] = len(starts)

    def pick(self, index: int, random: Callable[[], float]) -> tuple[int, int]:
        """Where the option of group ``index`` that ``random`` picks starts and ends."""
        start, end, masked = self.starts[index] + 1, self.ends[index], self.masked
        if self.after[index] == index + 1:  # no group nested in it: its bars split it (the most common group)
            options = masked[start:end].split("|")
            chosen = int(random() * len(options))
            low = start + sum(map(len, options[:chosen])) + chosen
            return low, low + len(options[chosen])
        if masked.find("|", start, end) < 0:  # one option (a character is searched so once per group around it)
            random()  # the editor picks all the same: later picks take the numbers after this one
            return start, end
        edges, position, child = [start - 1], start, index + 1
        while child < self.after[index]:  # skip the groups nested in it, and the bars inside them
            edges += [m.start() for m in _BAR.finditer(masked, position, self.starts[child])]
            position, child = self.ends[child] + 1, self.after[child]
        edges += [m.start() for m in _BAR.finditer(masked, position, end)]
        edges.append(end)
        chosen = int(random() * (len(edges) - 1))
        return edges[chosen] + 1, edges[chosen + 1]
