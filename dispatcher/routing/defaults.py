"""What a workflow needs of a ComfyUI when run with its parameters' defaults: pure, no I/O.

``GET /v1/workflows/{id}`` counts the workers that could run it so. A required parameter with no default (a
prompt, an input image) has no value to bind; unless it names a model file, it changes nothing a ComfyUI needs,
so the template's own value stands in for it.
"""

from __future__ import annotations

from dataclasses import replace

from dispatcher.binding import bind
from dispatcher.errors import ParameterError
from dispatcher.routing.capabilities import KNOWN_LOADERS, Loaders, Needs, needs_of
from dispatcher.workflows import Workflow

RUN_ID = "capabilities"  # bind() appends a run id to every filename_prefix: any valid one does here


def default_needs(workflow: Workflow, loaders: Loaders) -> Needs | None:
    """What a run of ``workflow`` given no parameters needs (``loaders`` as for :func:`needs_of`), or None
    when that depends on the run: a required parameter with no default is a loader input (names a model file)."""
    unset = {name for name, param in workflow.params.items() if param.required and param.default is None}
    for name in unset:
        for node_id, input_name in workflow.params[name].targets:
            class_type = workflow.graph[node_id].get("class_type")
            if input_name in {**KNOWN_LOADERS.get(class_type, {}), **loaders.get(class_type, {})}:
                return None
    settled = replace(workflow, params={n: p for n, p in workflow.params.items() if n not in unset})
    try:
        bound = bind(settled, {}, run_id=RUN_ID)
    except ParameterError:  # a default its own manifest refuses: the registry checks them, so not expected
        return None
    return needs_of(bound.graph, loaders)
