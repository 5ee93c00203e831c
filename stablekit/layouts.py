"""What a model folder is, read from its own files: the pipeline class, the architecture, the native size.

A hub repo or local folder is resolved from `model_index.json` (diffusers pipelines), `config.json` (a
diffusers model or a transformers architecture) or `config.yaml` (TripoSR). The class picks the catalog record
whose family, loader, defaults and memory profile apply; the component configs then correct what the folder
itself says (native size, frames, audio length, context length).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import UnknownModelError

# Pipeline class -> (the catalog record it is like, its tasks when they differ from that record's).
PIPELINES: dict[str, tuple[str, tuple[str, ...] | None]] = {
    "StableDiffusionPipeline": ("sd15", None),
    "StableDiffusionImg2ImgPipeline": ("sd15", ("img2img",)),
    "StableDiffusionInpaintPipeline": ("sd15", ("inpaint",)),
    "StableDiffusionXLPipeline": ("sdxl", None),
    "StableDiffusionXLImg2ImgPipeline": ("sdxl-refiner", ("refine", "img2img")),
    "StableDiffusionXLInpaintPipeline": ("sdxl", ("inpaint",)),
    "StableDiffusion3Pipeline": ("sd3-medium", None),
    "StableDiffusion3Img2ImgPipeline": ("sd3-medium", ("img2img",)),
    "StableDiffusion3InpaintPipeline": ("sd3-medium", ("inpaint",)),
    "StableVideoDiffusionPipeline": ("svd", None),
    "StableAudioPipeline": ("stable-audio-open", None),
}
# A single diffusers model (config.json with `_class_name`) stablekit can use on its own.
MODELS: dict[str, str] = {"AutoencoderKL": "sdxl-vae-fp16-fix", "AutoencoderTiny": "taesd"}
# transformers architectures of the StableLM family and kin: any *ForCausalLM loads through AutoModelForCausalLM.
_BASE_LM, _CHAT_LM = "stablelm-2-1.6b", "stablelm-2-zephyr-1.6b"
_LIBRARIES = ("diffusers", "transformers", None)  # component libraries whose code ships with those packages
_TRIPOSR_KEYS = ("tokenizer", "backbone", "decoder", "renderer")


@dataclass(frozen=True)
class Layout:
    """What the folder declares, and the record whose family, defaults and memory profile it takes."""

    loader: str
    template: str  # catalog id
    found: str  # said to the user: "diffusers StableDiffusionXLPipeline"
    tasks: tuple[str, ...] | None = None
    family: str | None = None  # when it differs from the template's
    defaults: dict[str, Any] = field(default_factory=dict)  # the folder's own figures
    limits: dict[str, Any] = field(default_factory=dict)
    files: tuple[str, ...] = ()  # allow-patterns, where the loader's defaults do not fit


def json_object(path: Path) -> dict[str, Any]:
    """A JSON object file's contents, or {} when it is absent, unreadable or not an object: for readers whose
    caller (the loader, a cache) reports or tolerates a bad file itself."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _json(folder: Path, name: str, where: str) -> dict[str, Any] | None:
    """A JSON object file of the folder, None when absent; a clear error when it is not a JSON object."""
    path = folder / name
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise UnknownModelError(f"{where}: {name} is not readable JSON ({err})",
                                hint="the file is damaged: download or copy the model again") from None
    if not isinstance(data, dict):
        raise UnknownModelError(f"{where}: {name} should hold a JSON object, not {type(data).__name__}",
                                hint="the file is damaged or not a model config") from None
    return data


def _library_code(library: str | None) -> bool:
    """Whether a component's code ships with diffusers or transformers (diffusers names its own pipelines'
    classes by their module, such as "stable_audio"): anything else would be the repository's own code."""
    if library in _LIBRARIES:
        return True
    import importlib.util

    found = importlib.util.find_spec("diffusers")  # locates the package without importing it
    if found is None or not found.submodule_search_locations or not library.isidentifier():
        return False
    return any((Path(where) / "pipelines" / library).is_dir() for where in found.submodule_search_locations)


def _positive(value: Any) -> int | None:
    if isinstance(value, list) and value:
        value = value[0]
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def read(folder: Path, where: str, listing: list[str] | None = None) -> Layout:
    """The layout of `folder` (a local folder or a hub snapshot); `where` names it in errors.

    `listing`: the repo's file names when only the configs are on disk yet (a hub repo before its pull).
    """
    index = _json(folder, "model_index.json", where)
    if index is not None:
        return _pipeline(folder, index, where)
    config = _json(folder, "config.json", where)
    if config is not None:
        return _single(folder, config, where)
    if (folder / "config.yaml").is_file():
        return _triposr(folder, where, listing)
    raise UnknownModelError(f"{where} is not a model folder (no model_index.json, config.json or config.yaml)",
                            hint="pass the folder that holds model_index.json, or a catalog id")


def _pipeline(folder: Path, index: dict[str, Any], where: str) -> Layout:
    name = index.get("_class_name")
    if not isinstance(name, str):
        raise UnknownModelError(f"{where}: model_index.json has no pipeline class (_class_name)",
                                hint="the file is damaged or not a diffusers model index")
    for key, entry in index.items():
        if key.startswith("_") or isinstance(entry, (bool, int, float, str, type(None))):
            continue  # the pipeline's own settings (force_zeros_for_empty_prompt ...)
        if not (isinstance(entry, list) and len(entry) == 2 and all(isinstance(v, (str, type(None))) for v in entry)):
            raise UnknownModelError(f"{where}: model_index.json entry '{key}' should be [library, class], "
                                    f"not {entry!r}", hint="the file is damaged or not a diffusers model index")
        if not _library_code(entry[0]):
            raise UnknownModelError(
                f"{where}: component '{key}' needs custom code ({entry[0]}.{entry[1]}); stablekit never runs "
                "code from model repositories", hint="use a model whose components all come from diffusers or "
                "transformers")
    if name not in PIPELINES:
        raise UnknownModelError(f"{where}: pipeline class {name} is not one stablekit runs",
                                hint=f"supported: {', '.join(PIPELINES)}")
    template, tasks = PIPELINES[name]
    unet = _json(folder, "unet/config.json", where) or {}
    family = None
    if template == "sd15" and unet.get("cross_attention_dim") == 1024:  # OpenCLIP-H: the SD 2.x layout
        template, family = "sd21", "sd21"
    defaults: dict[str, Any] = {}
    limits: dict[str, Any] = {}
    denoiser = unet or _json(folder, "transformer/config.json", where) or {}
    vae = _json(folder, "vae/config.json", where) or {}
    if name == "StableAudioPipeline":
        hop = math.prod(r for r in vae.get("downsampling_ratios", []) if isinstance(r, int)) or None
        rate, size = _positive(vae.get("sampling_rate")), _positive(denoiser.get("sample_size"))
        if hop and rate and size:
            limits["max_audio_length_in_s"] = math.floor(size * hop / rate * 100) / 100
    else:
        blocks = vae.get("block_out_channels")
        sample = _positive(denoiser.get("sample_size"))
        if isinstance(blocks, list) and blocks and sample:
            defaults["native_side"] = sample * 2 ** (len(blocks) - 1)
        frames = _positive(unet.get("num_frames"))
        if frames and name == "StableVideoDiffusionPipeline":
            defaults["num_frames"] = frames
    return Layout(name, template, f"diffusers {name}", tasks, family, defaults, limits)


def _single(folder: Path, config: dict[str, Any], where: str) -> Layout:
    name = config.get("_class_name")
    if name is not None:
        if name not in MODELS:
            raise UnknownModelError(f"{where}: a single diffusers {name}, not a model stablekit runs on its own",
                                    hint=f"single models stablekit uses: {', '.join(MODELS)}")
        return Layout(name, MODELS[name], f"diffusers {name}")
    architectures = config.get("architectures")
    if not (isinstance(architectures, list) and all(isinstance(a, str) for a in architectures)):
        raise UnknownModelError(f"{where}: config.json names no architecture (a list 'architectures')",
                                hint="the file is damaged or not a transformers model config")
    lm = next((a for a in architectures if a.endswith("ForCausalLM")), None)
    if lm is None:
        raise UnknownModelError(f"{where}: architecture {', '.join(architectures) or 'none'} is not a text "
                                "generator stablekit runs", hint="text models need a *ForCausalLM architecture")
    own_code = " (with its own code: loads only with --trust-remote-code)" if config.get("auto_map") else ""
    chat = (folder / "chat_template.jinja").is_file() or "chat_template" in (
        _json(folder, "tokenizer_config.json", where) or {})
    limits = {}
    context = _positive(config.get("max_position_embeddings"))
    if context:
        limits["context_length"] = context
    model_type = config.get("model_type")
    family = model_type if isinstance(model_type, str) and model_type else None
    return Layout("AutoModelForCausalLM", _CHAT_LM if chat else _BASE_LM, f"transformers {lm}{own_code}",
                  ("text", "chat") if chat else ("text",), family, {}, limits)


def _triposr(folder: Path, where: str, listing: list[str] | None) -> Layout:
    import yaml

    try:
        data = yaml.safe_load((folder / "config.yaml").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise UnknownModelError(f"{where}: config.yaml is not readable YAML ({err})") from None
    if not isinstance(data, dict) or not all(isinstance(data.get(key), dict) for key in _TRIPOSR_KEYS):
        raise UnknownModelError(f"{where}: config.yaml is not a TripoSR config (needs {', '.join(_TRIPOSR_KEYS)})")
    names = set(listing) if listing is not None else {p.name for p in folder.iterdir()}
    weights = ("model.safetensors",) if "model.safetensors" in names else ("model.ckpt",)
    return Layout("TripoSR", "triposr", "TripoSR config.yaml", files=("config.yaml", "*.json", *weights))


def sized(defaults: dict[str, Any], layout: Layout, multiple: int) -> dict[str, Any]:
    """The template's defaults corrected by the folder's own figures (native size, frames, audio length)."""
    merged = {**defaults, **{k: v for k, v in layout.defaults.items() if k != "native_side"}}
    side = layout.defaults.get("native_side")
    width, height = defaults.get("width"), defaults.get("height")
    if side and isinstance(width, int) and isinstance(height, int):
        scale = side / math.sqrt(width * height)  # same area as side x side, the template's aspect
        merged["width"] = max(multiple, round(width * scale / multiple) * multiple)
        merged["height"] = max(multiple, round(height * scale / multiple) * multiple)
    longest = layout.limits.get("max_audio_length_in_s")
    if longest and isinstance(merged.get("audio_end_in_s"), (int, float)):
        merged["audio_end_in_s"] = min(merged["audio_end_in_s"], longest)
    return merged
