"""How a simulated node fails: the exception the executor turns into ``execution_error`` or ``_interrupted``.

A real ComfyUI traceback lists frames of its own files; the fake reports frames of the same shape,
rooted at :data:`COMFY_ROOT` (where the recorded server lived), so clients that print or parse them
see what they would see from ComfyUI.
"""

from __future__ import annotations

COMFY_ROOT = "/opt/ComfyUI"

OOM_TYPE = "torch.OutOfMemoryError"
OOM_TIPS = (
    "This error means you ran out of memory on your GPU.\n\n"
    "TIPS: If the workflow worked before you might have accidentally set the batch_size to a large number."
)


def frame(file: str, line: int, function: str, code: str, underline_from: str | None = None) -> str:
    """One ``traceback.format_tb`` entry, with Python 3.11's ``^^^`` under the failing expression."""
    text = f'  File "{COMFY_ROOT}/{file}", line {line}, in {function}\n    {code}\n'
    if underline_from is not None:
        start = code.index(underline_from)
        text += " " * (4 + start) + "^" * (len(code) - start) + "\n"
    return text


_CALLBACKS = "execution_block_cb=execution_block_cb, pre_execute_cb=pre_execute_cb, hidden_inputs=hidden_inputs"

# The frames every node failure passes through in ComfyUI 0.3.64's execution.py (as in runtime_error.json).
EXECUTION_FRAMES = (
    frame("execution.py", 496, "execute",
          "output_data, output_ui, has_subgraph, has_pending_tasks = await get_output_data(prompt_id, unique_id, "
          f"obj, input_data_all, {_CALLBACKS})", "await"),
    frame("execution.py", 315, "get_output_data",
          "return_values = await _async_map_node_over_list(prompt_id, unique_id, obj, input_data_all, "
          f"obj.FUNCTION, allow_interrupt=True, {_CALLBACKS})", "await"),
    frame("execution.py", 289, "_async_map_node_over_list", "await process_inputs(input_dict, i)"),
    frame("execution.py", 277, "process_inputs", "result = f(**inputs)", "f("),
)  # fmt: skip

SAVE_OUTSIDE_FRAMES = (
    frame("nodes.py", 1590, "save_images",
          "full_output_folder, filename, counter, subfolder, filename_prefix = folder_paths.get_save_image_path("
          "filename_prefix, self.output_dir, images[0].shape[1], images[0].shape[0])", "folder_paths."),
    frame("folder_paths.py", 397, "get_save_image_path", "raise Exception(err)"),
)  # fmt: skip


class Interrupted(Exception):
    """Raised inside a node when ``/interrupt`` stops the running prompt."""


class NodeFailure(Exception):
    """Raised by a simulated node; ``exception_type`` is the dotted Python type ComfyUI would report."""

    def __init__(self, exception_type: str, message: str, frames: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.exception_type = exception_type
        self.message = message
        self.frames = frames

    @property
    def exception_message(self) -> str:
        """ComfyUI appends tips (non-empty only for out-of-memory) after a newline."""
        return f"{self.message}\n{OOM_TIPS if self.exception_type == OOM_TYPE else ''}"

    @property
    def traceback(self) -> list[str]:
        return [*EXECUTION_FRAMES, *self.frames]


def injected(class_type: str, function: str, exception_type: str, message: str) -> NodeFailure:
    """A failure asked for through ``/fake/control`` (``fail_node_type``)."""
    origin = frame("nodes.py", 1, function, f"raise {exception_type.rsplit('.', 1)[-1]}(message)")
    return NodeFailure(exception_type, message, (origin,))
