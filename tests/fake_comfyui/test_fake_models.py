"""Model folders of the fake: ``--models`` parsing, ``GET /models``, loader combo lists, and files not held."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from fake_comfy_helpers import Comfy, pixels, saved, wait_until
from typer.testing import CliRunner

from dispatcher.cli import app
from dispatcher.fake_comfyui import BackgroundFake, FakeConfig
from dispatcher.fake_comfyui.models import DEFAULT_CHECKPOINTS, MODEL_FOLDERS, model_folders, parse_models_option
from dispatcher.fake_comfyui.nodes import upscale_factor
from tests.support import FakeComfy

MODELS = {
    "checkpoints": ("sdxl.safetensors", "sd15.safetensors"),
    "loras": ("style.safetensors",),
    "vae": ("ae.safetensors",),
    "diffusion_models": ("flux-dev.safetensors",),
    "text_encoders": ("t5xxl.safetensors", "clip_l.safetensors"),
    "controlnet": ("canny.safetensors",),
    "upscale_models": ("4x-UltraSharp.pth",),
}


@pytest.fixture
def held(tmp_path: Path) -> Iterator[Comfy]:
    """A fake holding :data:`MODELS`."""
    with BackgroundFake(FakeConfig(port=0, output_dir=str(tmp_path / "comfy"), models=MODELS)) as fake:
        client = Comfy(fake)
        yield client
        client.close()


def every_loader(**changes: str) -> dict[str, Any]:
    """A graph through every model loader the fake knows; ``changes`` maps node id to another file name."""
    graph: dict[str, Any] = {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": "flux-dev.safetensors", "weight_dtype": "default"}},
        "2": {"class_type": "CLIPLoader", "inputs": {"clip_name": "t5xxl.safetensors", "type": "chroma"}},
        "3": {"class_type": "VAELoader", "inputs": {"vae_name": "ae.safetensors"}},
        "4": {"class_type": "LoraLoader", "inputs": {"model": ["1", 0], "clip": ["2", 0],
              "lora_name": "style.safetensors", "strength_model": 1.0, "strength_clip": 0.5}},
        "5": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat", "clip": ["4", 1]}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["4", 1]}},
        "7": {"class_type": "ControlNetLoader", "inputs": {"control_net_name": "canny.safetensors"}},
        "8": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0}},
        "9": {"class_type": "ControlNetApplyAdvanced", "inputs": {"positive": ["5", 0], "negative": ["6", 0],
              "control_net": ["7", 0], "image": ["8", 0], "strength": 0.8, "start_percent": 0.0,
              "end_percent": 1.0, "vae": ["3", 0]}},
        "10": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 48, "batch_size": 1}},
        "11": {"class_type": "KSampler", "inputs": {"seed": 1, "steps": 2, "cfg": 1.0, "sampler_name": "euler",
               "scheduler": "simple", "denoise": 1.0, "model": ["4", 0], "positive": ["9", 0],
               "negative": ["9", 1], "latent_image": ["10", 0]}},
        "12": {"class_type": "VAEDecode", "inputs": {"samples": ["11", 0], "vae": ["3", 0]}},
        "13": {"class_type": "UpscaleModelLoader", "inputs": {"model_name": "4x-UltraSharp.pth"}},
        "14": {"class_type": "ImageUpscaleWithModel", "inputs": {"upscale_model": ["13", 0], "image": ["12", 0]}},
        "15": {"class_type": "SaveImage", "inputs": {"images": ["14", 0], "filename_prefix": "all"}},
    }  # fmt: skip
    names = {"1": "unet_name", "2": "clip_name", "3": "vae_name", "4": "lora_name", "7": "control_net_name",
             "13": "model_name"}  # fmt: skip
    for node_id, name in changes.items():
        graph[node_id]["inputs"][names[node_id]] = name
    return graph


# -- parsing ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([], {}),
        (["loras=a.safetensors"], {"loras": ("a.safetensors",)}),
        (["checkpoints=b.safetensors, a.safetensors", "vae=v.pt"],
         {"checkpoints": ("b.safetensors", "a.safetensors"), "vae": ("v.pt",)}),
        (["loras=sdxl/detail.safetensors"], {"loras": ("sdxl/detail.safetensors",)}),
        (["unet=flux.safetensors", "clip=t5.safetensors"],  # ComfyUI's legacy names of two folders
         {"diffusion_models": ("flux.safetensors",), "text_encoders": ("t5.safetensors",)}),
    ],
)  # fmt: skip
def test_models_option_values_map_folders_to_files(values: list[str], expected: dict[str, Any]) -> None:
    assert parse_models_option(values) == expected


SYNTAX = r"\(expected FOLDER=FILE\[,FILE\.\.\.\]\)"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (["loras"], r"^--models 'loras': expected FOLDER=FILE\[,FILE\.\.\.\]$"),
        (["=a.safetensors"], rf"^--models '=a.safetensors': no FOLDER before '=' {SYNTAX}$"),
        (["loras="], rf"^--models 'loras=': no FILE after '=' {SYNTAX}$"),
        (["loras= , "], rf"^--models 'loras= , ': no FILE after '=' {SYNTAX}$"),
        (["loras=a,,b"], rf"^--models 'loras=a,,b': an empty FILE in the list {SYNTAX}$"),
        (["lora=a"], r"^--models 'lora=a': unknown model folder 'lora' \(known: checkpoints, configs, loras, "),
        (["loras=a", "loras=b"], r"^--models: folder 'loras' given twice$"),
        (["unet=a", "diffusion_models=b"], r"^--models: folder 'diffusion_models' given twice$"),
    ],
)
def test_bad_models_option_values_are_refused_in_one_line(values: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message) as refused:
        parse_models_option(values)
    assert "\n" not in str(refused.value)


def test_given_folders_replace_their_defaults_sorted_without_duplicates() -> None:
    default = model_folders({})
    assert list(default) == list(MODEL_FOLDERS)
    assert default["checkpoints"] == DEFAULT_CHECKPOINTS
    assert all(files == () for folder, files in default.items() if folder != "checkpoints")
    given = model_folders({"checkpoints": ("b.safetensors", "a.safetensors", "b.safetensors"), "loras": ("l.pt",)})
    assert given["checkpoints"] == ("a.safetensors", "b.safetensors")
    assert given["loras"] == ("l.pt",) and given["vae"] == ()
    with pytest.raises(ValueError, match="unknown model folder 'nope'"):
        model_folders({"nope": ("x",)})


@pytest.mark.parametrize(
    ("name", "scale"),
    [("4x-UltraSharp.pth", 4), ("RealESRGAN_x2plus.pth", 2), ("2xLexicaRRDBNet.pth", 2),
     ("sub/1x-ITF-SkinDiffDetail.pth", 1), ("ESRGAN_8x.pth", 8), ("mystery.safetensors", 4)],
)  # fmt: skip
def test_upscale_factor_comes_from_the_model_name(name: str, scale: int) -> None:
    assert upscale_factor(name) == scale


# -- the command line ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--models", "loras"], "comfy-dispatch: --models 'loras': expected FOLDER=FILE[,FILE...]"),
        (["--models", "loras="],
         "comfy-dispatch: --models 'loras=': no FILE after '=' (expected FOLDER=FILE[,FILE...])"),
        (["--models", "a=b=c"], "comfy-dispatch: --models 'a=b=c': unknown model folder 'a' (known: "
                                + ", ".join(MODEL_FOLDERS) + ")"),
        (["--model-load-seconds", "-1"], "comfy-dispatch: --model-load-seconds must be >= 0"),
    ],
)  # fmt: skip
def test_bad_model_flags_end_the_command_with_one_line(
    args: list[str], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("dispatcher.cli.setup_logging", lambda level, process: None)  # leave pytest's logging be

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("served despite a bad flag")

    monkeypatch.setattr("dispatcher.fake_comfyui.serve", never)
    result = CliRunner().invoke(app, ["fake-comfyui", *args])
    assert result.exit_code == 2
    assert result.stderr == message + "\n"


def test_the_command_serves_the_models_and_load_time_it_is_given(tmp_path: Path) -> None:
    assert "--models" not in FakeComfy(tmp_path).args  # no flag unless asked: the fake's defaults
    models = {"loras": ["b.safetensors", "a.safetensors"], "unet": ["flux.safetensors"]}
    fake = FakeComfy(tmp_path, models=models, model_load_seconds=0.2).start()
    try:
        assert requests.get(fake.url + "/models/loras", timeout=5).json() == ["a.safetensors", "b.safetensors"]
        assert requests.get(fake.url + "/api/models/diffusion_models", timeout=5).json() == ["flux.safetensors"]
        assert requests.get(fake.url + "/models/checkpoints", timeout=5).json() == list(DEFAULT_CHECKPOINTS)
        graph = every_loader(**{"1": "flux.safetensors", "4": "a.safetensors"})
        reply = requests.post(fake.url + "/prompt", json={"prompt": graph}, timeout=5)
        assert reply.status_code == 400  # the files of the other folders are not held by this fake
        assert set(reply.json()["node_errors"]) == {"2", "3", "7", "13"}
        graph = {"1": graph["1"], "9": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}}
        prompt_id = requests.post(fake.url + "/prompt", json={"prompt": graph}, timeout=5).json()["prompt_id"]
        entry = wait_until(lambda: requests.get(f"{fake.url}/history/{prompt_id}", timeout=5).json())[prompt_id]
        stamps = {name: data["timestamp"] for name, data in entry["status"]["messages"]}
        assert stamps["execution_success"] - stamps["execution_start"] >= 200 - 1  # ms stamps are truncated
        assert fake.stats()["model_loads"] == 1
    finally:
        fake.stop()


# -- served lists -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["", "/api"])
def test_models_lists_every_folder_and_each_folders_files(held: Comfy, prefix: str) -> None:
    assert held.get(f"{prefix}/models").json() == list(MODEL_FOLDERS)
    assert held.get(f"{prefix}/models/checkpoints").json() == ["sd15.safetensors", "sdxl.safetensors"]
    assert held.get(f"{prefix}/models/text_encoders").json() == ["clip_l.safetensors", "t5xxl.safetensors"]
    assert held.get(f"{prefix}/models/loras").json() == ["style.safetensors"]
    assert held.get(f"{prefix}/models/embeddings").json() == []


@pytest.mark.parametrize("folder", ["nope", "unet", "clip", "Checkpoints"])
def test_an_unknown_model_folder_is_a_bare_404(held: Comfy, folder: str) -> None:
    reply = held.get(f"/models/{folder}")  # ComfyUI checks the name as given: legacy names are not found
    assert reply.status_code == 404 and reply.content == b""


def test_without_models_the_default_lists_are_served(comfy: Comfy) -> None:
    assert comfy.get("/models/checkpoints").json() == list(DEFAULT_CHECKPOINTS)
    assert comfy.get("/models/loras").json() == []
    info = comfy.get("/object_info/CheckpointLoaderSimple").json()["CheckpointLoaderSimple"]
    tip = {"tooltip": "The name of the checkpoint (model) to load."}
    assert info["input"]["required"]["ckpt_name"] == [list(DEFAULT_CHECKPOINTS), tip]
    assert comfy.get("/object_info/LoraLoader").json()["LoraLoader"]["input"]["required"]["lora_name"][0] == []


@pytest.mark.parametrize(
    ("node", "name", "folder"),
    [("CheckpointLoaderSimple", "ckpt_name", "checkpoints"), ("LoraLoader", "lora_name", "loras"),
     ("VAELoader", "vae_name", "vae"), ("UNETLoader", "unet_name", "diffusion_models"),
     ("CLIPLoader", "clip_name", "text_encoders"), ("ControlNetLoader", "control_net_name", "controlnet"),
     ("UpscaleModelLoader", "model_name", "upscale_models")],
)  # fmt: skip
def test_object_info_lists_each_loaders_files(held: Comfy, node: str, name: str, folder: str) -> None:
    expected = sorted(MODELS[folder])
    assert held.get("/object_info").json()[node]["input"]["required"][name][0] == expected
    assert held.get(f"/api/object_info/{node}").json()[node]["input"]["required"][name][0] == expected


def test_loader_schemas_have_comfyuis_shape(held: Comfy) -> None:
    info = held.get("/object_info").json()
    assert list(info["UNETLoader"]["input"]["required"]) == ["unet_name", "weight_dtype"]
    assert info["CLIPLoader"]["input"]["optional"] == {"device": [["default", "cpu"], {"advanced": True}]}
    assert info["CLIPLoader"]["input_order"] == {"required": ["clip_name", "type"], "optional": ["device"]}
    apply = info["ControlNetApplyAdvanced"]
    assert (apply["output"], apply["output_name"]) == (["CONDITIONING", "CONDITIONING"], ["positive", "negative"])
    assert (info["LoraLoader"]["display_name"], info["LoraLoader"]["category"]) == ("Load LoRA", "loaders")
    assert info["UpscaleModelLoader"]["python_module"] == "comfy_extras.nodes_upscale_model"


# -- running and refusing -----------------------------------------------------------------------------------------


def test_a_graph_through_every_loader_runs(held: Comfy) -> None:
    prompt_id, frames = held.run(every_loader())
    assert frames[-3]["type"] == "execution_success"
    (image,) = saved(held, prompt_id, node="15")
    assert pixels(held, image).size == (256, 192)  # the 4x upscale model of the 64x48 decoded latent
    assert held.stats()["loaded_model"] == "diffusion_models/flux-dev.safetensors"


@pytest.mark.parametrize(
    ("node_id", "class_type", "name", "config"),
    [("1", "UNETLoader", "unet_name", [["flux-dev.safetensors"], {}]),
     ("2", "CLIPLoader", "clip_name", [["clip_l.safetensors", "t5xxl.safetensors"], {}]),
     ("3", "VAELoader", "vae_name", [["ae.safetensors"], {}]),
     ("4", "LoraLoader", "lora_name", [["style.safetensors"], {"tooltip": "The name of the LoRA."}]),
     ("7", "ControlNetLoader", "control_net_name", [["canny.safetensors"], {}]),
     ("13", "UpscaleModelLoader", "model_name", [["4x-UltraSharp.pth"], {}])],
)  # fmt: skip
def test_a_file_not_held_is_refused_as_not_in_list(
    held: Comfy, node_id: str, class_type: str, name: str, config: list[Any]
) -> None:
    reply = held.submit(every_loader(**{node_id: "missing.safetensors"}), "c")
    assert reply.status_code == 400
    details = f"{name}: 'missing.safetensors' not in {config[0]}"
    assert reply.json() == {
        "error": {
            "type": "prompt_outputs_failed_validation",
            "message": "Prompt outputs failed validation",
            "details": "",  # ComfyUI joins only the output node's own reasons here: it has none
            "extra_info": {},
        },
        "node_errors": {
            node_id: {
                "errors": [
                    {
                        "type": "value_not_in_list",
                        "message": "Value not in list",
                        "details": details,
                        "extra_info": {"input_name": name, "input_config": config,
                                       "received_value": "missing.safetensors"},
                    }
                ],
                "dependent_outputs": ["15"],
                "class_type": class_type,
            }
        },
    }  # fmt: skip
    assert held.stats()["queued"] == 0


def test_a_checkpoint_not_held_is_refused(held: Comfy) -> None:
    graph = {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "v1-5-pruned-emaonly.safetensors"}},
        "9": {"class_type": "PreviewAny", "inputs": {"source": ["4", 0]}},
    }
    (reason,) = held.submit(graph, "c").json()["node_errors"]["4"]["errors"]
    assert reason["details"] == (
        "ckpt_name: 'v1-5-pruned-emaonly.safetensors' not in ['sd15.safetensors', 'sdxl.safetensors']"
    )
    graph["4"]["inputs"]["ckpt_name"] = "sdxl.safetensors"
    assert held.submit(graph, "c").status_code == 200
