"""Typed requests, one per command, with fields named like the diffusers / transformers call arguments.

A request is resolved from four layers, highest first: command-line flags, a preset, the model's
registry defaults, and the global defaults below.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import typing
from dataclasses import dataclass
from typing import Any

from .errors import PresetError, UsageError


@dataclass(frozen=True)
class ImageRequest:
    prompt: str
    model: str = "sdxl"
    negative_prompt: str | None = None
    width: int | None = None
    height: int | None = None
    num_inference_steps: int = 30
    guidance_scale: float = 7.0
    num_images: int = 1
    batch_size: int = 1
    seed: int | None = None
    scheduler: str | None = None
    image: str | None = None  # img2img / inpainting input
    mask: str | None = None
    strength: float | None = None
    loras: list[str] | None = None  # "PATH_OR_REPO[:SCALE]"
    refiner: bool = False
    refiner_model: str = "sdxl-refiner"
    denoising_split: float = 0.8  # SDXL base runs to this fraction of the steps, the refiner from it
    metadata: bool = True  # embed the parameters in the image (the sidecar is written either way)
    decoder: str = "full"  # full: the model's VAE; tiny: the family's TAESD (fast, approximate)
    compile: bool = False  # torch.compile the denoiser (a one-time cost, cached under STABLEKIT_HOME)
    fast: bool = False  # CUDA only: compile, channels_last and fused QKV projections
    device: str | None = None
    dtype: str | None = None
    offload: str | None = None
    vram: float | None = None


@dataclass(frozen=True)
class TextRequest:
    """`stablekit text` and `stablekit chat`; sampling fields are transformers' generate() arguments."""

    prompt: str
    model: str = "stablelm-2-zephyr-1.6b"
    system: str | None = None  # chat models only
    raw: bool = False  # plain completion even where the tokenizer has a chat template
    max_new_tokens: int = 256
    min_new_tokens: int = 0
    temperature: float = 0.7  # 0 = greedy (the same text every time, no seed needed)
    top_p: float = 1.0
    top_k: int = 50  # 0 = off
    repetition_penalty: float = 1.0
    stop: list[str] = dataclasses.field(default_factory=list)
    trust_remote_code: bool = False  # run Python code shipped with a model folder: only when asked
    quantize: str | None = None  # int8: weight-only int8 linear layers on the CPU (torch dynamic quantisation)
    seed: int | None = None
    device: str | None = None
    dtype: str | None = None
    offload: str | None = None
    vram: float | None = None


@dataclass(frozen=True)
class AudioRequest:
    """`stablekit audio`: fields are StableAudioPipeline's call arguments; the clip is start..end seconds."""

    prompt: str
    model: str = "stable-audio-open"
    negative_prompt: str | None = None
    audio_start_in_s: float = 0.0
    audio_end_in_s: float = 10.0
    num_inference_steps: int = 100
    guidance_scale: float = 7.0
    num_waveforms_per_prompt: int = 1
    bit_depth: str | None = None  # 16, 24, 32f (wav) or 16, 24 (flac); None: the format's default
    normalize: bool = True  # lower a clip that peaks beyond full scale, rather than clip it
    metadata: bool = True  # title, software and parameters in the file's tags
    seed: int | None = None
    device: str | None = None
    dtype: str | None = None
    offload: str | None = None
    vram: float | None = None


@dataclass(frozen=True)
class MeshRequest:
    """`stablekit mesh`: TripoSR on an image, or on an image drawn from `prompt` by `image_model` first."""

    prompt: str  # "" when `image` is given
    model: str = "triposr"
    image: str | None = None
    image_model: str = "sdxl-turbo"
    keep_image: bool = False
    remove_background: bool = True
    foreground_ratio: float = 0.85
    mc_resolution: int | None = None  # None: the device plan's (256 on a GPU, lower on a CPU)
    mc_threshold: float = 25.0
    chunk_size: int | None = None  # None: sized to the device's memory
    output_format: str | None = None  # glb obj ply stl; None: the --output extension, else glb
    up: str = "y"
    face_count: int | None = None  # --faces: quadric decimation to about this many faces; None: keep all
    texture_size: int | None = None  # --texture: bake a UV texture this many texels square; None: vertex colours
    turntable: str | None = None  # --turntable: also write a video of the mesh turning (.mp4 .gif .webp)
    turntable_views: int = 30
    turntable_size: int = 256
    metadata: bool = True  # the parameters in the GLB's extras / the texture's PNG text / the turntable's comment
    seed: int | None = None  # text-to-3D: the image's seed (TripoSR itself draws nothing)
    device: str | None = None
    dtype: str | None = None
    offload: str | None = None
    vram: float | None = None


@dataclass(frozen=True)
class VideoRequest:
    """`stablekit video`: StableVideoDiffusionPipeline's call arguments; the first frame is `image`, or an image
    drawn from `prompt` by `image_model` first."""

    prompt: str  # "" when `image` is given
    model: str = "svd-xt"
    image: str | None = None
    image_model: str = "sdxl-turbo"
    keep_image: bool = False
    width: int = 1024
    height: int = 576
    num_frames: int = 25
    fps: int = 7  # the motion conditioning and the output's frame rate
    motion_bucket_id: int = 127
    noise_aug_strength: float = 0.02
    num_inference_steps: int = 25
    min_guidance_scale: float = 1.0
    max_guidance_scale: float = 3.0
    decode_chunk_size: int | None = None  # None: the device plan's
    decoder: str = "full"  # tiny is refused: SVD's temporal decoder has no tiny twin
    metadata: bool = True  # the parameters in the file's comment / EXIF (the sidecar is written either way)
    seed: int | None = None
    device: str | None = None
    dtype: str | None = None
    offload: str | None = None
    vram: float | None = None


REQUESTS: dict[str, type] = {"image": ImageRequest, "text": TextRequest, "audio": AudioRequest, "mesh": MeshRequest,
                             "video": VideoRequest}
_NOT_IN_PRESETS = {"prompt", "image", "mask"}  # what a preset may not set: the per-run inputs


@functools.cache
def _type_hints(cls: type) -> dict[str, Any]:
    """A request type's field types (evaluated once: the catalog checks each record's defaults against them)."""
    return typing.get_type_hints(cls)


def settable_fields(command: str) -> dict[str, Any]:
    """Fields a preset (or a registry default) may set for this command, with their types."""
    cls = REQUESTS[command]
    hints = _type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.name not in _NOT_IN_PRESETS}


def accepts(annotation: Any, value: Any) -> bool:
    if typing.get_origin(annotation) is list:
        (item,) = typing.get_args(annotation)
        return isinstance(value, list) and all(accepts(item, v) for v in value)
    options = typing.get_args(annotation) or (annotation,)
    for option in options:
        if typing.get_origin(option) is list and accepts(option, value):
            return True
        if option is type(None) and value is None:
            return True
        if option is bool and isinstance(value, bool):
            return True
        if option is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return True
        if option is int and isinstance(value, int) and not isinstance(value, bool):
            return True
        if option is str and isinstance(value, str):
            return True
    return False


def check_values(command: str, values: dict[str, Any], where: str, error=PresetError) -> None:
    """Every key known to the command's request, every value of the right type."""
    check_fields(settable_fields(command), command, values, where, error)


def check_fields(fields: dict[str, Any], command: str, values: dict[str, Any], where: str, error=PresetError) -> None:
    """Each key among `fields`, each value of its field's type and finite: one message naming key and place."""
    for key, value in values.items():
        if key not in fields:
            raise error(f"{where}: unknown key '{key}' for `stablekit {command}`",
                        hint=f"known keys: {', '.join(sorted(fields))}")
        if not accepts(fields[key], value):
            raise error(f"{where}: '{key}' should be {type_name(fields[key])}, got {value!r}")
        if isinstance(value, float) and not math.isfinite(value):
            raise error(f"{where}: '{key}' must be a finite number, got {value!r}")


def type_name(annotation: Any) -> str:
    if typing.get_origin(annotation) is list:
        return f"a list of {type_name(typing.get_args(annotation)[0])}"
    names = [type_name(a) if typing.get_origin(a) else a.__name__
             for a in (typing.get_args(annotation) or (annotation,)) if a is not type(None)]
    return " or ".join(names)


def resolve(command: str, *, prompt: str, flags: dict[str, Any], preset: dict[str, Any],
            model_defaults: dict[str, Any]):
    """Merge the layers (flag > preset > model defaults > global defaults) into a request."""
    settable = settable_fields(command)
    values: dict[str, Any] = {}
    values.update({k: v for k, v in model_defaults.items() if k in settable})
    values.update(preset)
    values.update({k: v for k, v in flags.items() if v is not None})
    unknown = set(values) - {f.name for f in dataclasses.fields(REQUESTS[command])}
    if unknown:
        raise UsageError(f"unknown option(s) for {command}: {', '.join(sorted(unknown))}")
    return REQUESTS[command](prompt=prompt, **values)
