"""The model files a fake ComfyUI holds (``--models``, ``GET /models``) and the model it has loaded.

A real ComfyUI lists the files under ``models/<folder>/`` for each key of ``folder_paths.folder_names_and_paths``;
the fake holds names only. Loading a diffusion model takes time on a real GPU, and a server keeps the last
one loaded until another replaces it or ``POST /free`` unloads it: :class:`ModelMemory` simulates that, so
tests and benchmarks can see what routing prompts to a worker that already holds their model saves.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

DEFAULT_CHECKPOINTS = (
    "sd-v1-5-inpainting.ckpt",
    "sd_xl_base_1.0.safetensors",
    "sd_xl_refiner_1.0.safetensors",
    "v1-5-pruned-emaonly-fp16.safetensors",
    "v1-5-pruned-emaonly.safetensors",
)
"""The checkpoints a fake has unless told otherwise: those of the bundled workflows (ComfyUI lists them sorted)."""

MODEL_FOLDERS = (
    "checkpoints", "configs", "loras", "vae", "text_encoders", "diffusion_models", "clip_vision", "style_models",
    "embeddings", "diffusers", "vae_approx", "controlnet", "gligen", "upscale_models", "custom_nodes",
    "hypernetworks", "photomaker", "classifiers", "model_patches", "audio_encoders",
)  # fmt: skip
"""``folder_names_and_paths`` of ComfyUI 0.3.64, in its order (what ``GET /models`` lists)."""

LEGACY_FOLDERS = {"unet": "diffusion_models", "clip": "text_encoders"}
"""Old names ComfyUI's ``map_legacy`` still accepts for a folder."""

MODELS_SYNTAX = "FOLDER=FILE[,FILE...]"


def parse_models_option(values: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """The ``--models FOLDER=FILE[,FILE...]`` values (repeatable) as folder -> files.

    Raises ValueError with a one-line message naming the bad value. Legacy folder names (``unet``, ``clip``)
    mean their current folder; a folder given twice is refused rather than guessing which list wins.
    """
    given: dict[str, tuple[str, ...]] = {}
    for value in values:
        folder, sep, listing = value.partition("=")
        folder = folder.strip()
        if not sep:
            raise ValueError(f"--models {value!r}: expected {MODELS_SYNTAX}")
        if not folder:
            raise ValueError(f"--models {value!r}: no FOLDER before '=' (expected {MODELS_SYNTAX})")
        files = tuple(name.strip() for name in listing.split(","))
        if not any(files):
            raise ValueError(f"--models {value!r}: no FILE after '=' (expected {MODELS_SYNTAX})")
        if not all(files):
            raise ValueError(f"--models {value!r}: an empty FILE in the list (expected {MODELS_SYNTAX})")
        try:
            folder = known_folder(folder)
        except ValueError as exc:
            raise ValueError(f"--models {value!r}: {exc}") from None
        if folder in given:
            raise ValueError(f"--models: folder {folder!r} given twice")
        given[folder] = files
    return given


def model_folders(given: Mapping[str, Iterable[str]]) -> dict[str, tuple[str, ...]]:
    """Every folder's file list: the ``given`` folders replace their defaults (only checkpoints has files).

    Lists are sorted and without duplicates, as ComfyUI's ``get_filename_list`` returns them.
    """
    folders: dict[str, tuple[str, ...]] = {name: () for name in MODEL_FOLDERS}
    folders["checkpoints"] = DEFAULT_CHECKPOINTS
    for folder, files in given.items():
        folders[known_folder(folder)] = tuple(sorted(set(files)))
    return folders


def known_folder(folder: str) -> str:
    """The folder's current name; ValueError if ComfyUI 0.3.64 has no such model folder."""
    folder = LEGACY_FOLDERS.get(folder, folder)
    if folder not in MODEL_FOLDERS:
        raise ValueError(f"unknown model folder {folder!r} (known: {', '.join(MODEL_FOLDERS)})")
    return folder


class ModelMemory:
    """The diffusion model the fake holds in (simulated) VRAM; ``None`` until a prompt loads one.

    ``loaded`` is ``"<folder>/<file>"`` (its path under ComfyUI's ``models/``), so a checkpoint and a
    diffusion model of the same file name are different models. One slot: a prompt that names another
    model replaces the loaded one, as on a GPU with room for one.
    """

    def __init__(self, load_seconds: float) -> None:
        self.load_seconds = load_seconds
        self.loaded: str | None = None
        self._unload_pending = False

    def unload(self) -> None:
        self.loaded = None
        self._unload_pending = False

    def request_unload(self, busy: bool) -> None:
        """``POST /free``: ComfyUI's prompt worker unloads after the running prompt, or at once when idle."""
        if busy:
            self._unload_pending = True
        else:
            self.unload()

    def prompt_done(self) -> None:
        """Apply an unload asked for while the prompt ran."""
        if self._unload_pending:
            self.unload()
