"""What `stablekit image` checks before anything loads: the request against the model, LoRA names, inputs."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

from ..errors import UsageError
from ..families import family
from ..params import ImageRequest
from ..registry import HUB_ID, ModelSpec

_DEFAULTS = {f.name: f.default for f in dataclasses.fields(ImageRequest)}


def task_of(request: ImageRequest) -> str:
    if request.mask:
        return "inpaint"
    return "img2img" if request.image else "txt2img"


def strength_of(request: ImageRequest) -> float | None:
    """How much of the input image is repainted: the user's, else 0.8 for img2img and 1.0 for inpainting."""
    if not request.image:
        return None
    if request.strength is not None:
        return request.strength
    return 1.0 if request.mask else 0.8


def ignored_negative(request) -> str | None:
    """Why --negative does nothing here, if it does nothing: at guidance <= 1 the diffusers pipelines (images and
    Stable Audio) run without classifier-free guidance, and the negative prompt is never encoded."""
    if request.negative_prompt and request.guidance_scale <= 1:
        return (f"--negative is ignored: at --guidance {request.guidance_scale:g} (1 or less) the pipeline runs "
                "without classifier-free guidance, so the negative prompt has no effect")
    return None


def ignored(request: ImageRequest, spec: ModelSpec) -> dict[str, str]:
    """What the job asks for, or the model's record brings, that the pipeline will not use: key -> why. Warned
    about, and recorded in the sidecar as unused (never embedded as if it had an effect)."""
    found = {}
    negative = ignored_negative(request)
    if negative:
        found["negative_prompt"] = negative
    layers = spec.defaults.get("skip_guidance_layers")
    if layers and task_of(request) != "txt2img":
        found["skip_guidance_layers"] = (
            f"{spec.id}'s skip-layer guidance (layers {', '.join(map(str, layers))}) is not available in "
            f"{task_of(request)}: diffusers' SD3 {task_of(request)} pipeline lacks it, so the image is made without it")
    return found


def validate(request: ImageRequest, spec: ModelSpec) -> None:
    """Reject what the pipeline would choke on, before anything is loaded."""
    from .. import schedulers

    if not request.prompt.strip():
        raise UsageError("the prompt is empty", hint='say what to draw: stablekit image "a lighthouse at dusk"')
    task = task_of(request)
    if request.mask and not request.image:
        raise UsageError("--mask needs --image (the picture to paint into)", hint="add --image PICTURE, or drop --mask")
    if task not in spec.tasks:
        raise UsageError(f"{spec.id} cannot do {task} (it does: {', '.join(spec.tasks)})",
                         hint=f"pick a model that does {task} (see `stablekit models list`)")
    multiple = int(spec.limits.get("size_multiple", 8))
    for name in ("width", "height"):
        value = getattr(request, name)
        if value is None and request.image:
            continue  # taken from the input image
        if value is None or value <= 0 or value % multiple:
            nearest = max(multiple, round((value or 0) / multiple) * multiple)
            raise UsageError(f"--{name} {value}: must be a positive multiple of {multiple} for {spec.id}",
                             hint=f"e.g. --{name} {nearest}")
    for name, flag in (("num_inference_steps", "--steps"), ("num_images", "--count"), ("batch_size", "--batch-size")):
        if getattr(request, name) < 1:
            raise UsageError(f"{flag} {getattr(request, name)}: must be at least 1")
    if request.guidance_scale < 0:
        raise UsageError(f"--guidance {request.guidance_scale}: must not be negative")
    if request.strength is not None and not request.image:
        raise UsageError("--strength needs --image", hint="add --image PICTURE, or drop --strength")
    _check_strength(request)
    _check_refiner(request, spec, task)
    schedulers.check(request.scheduler, spec.family)
    for text in request.loras or []:
        check_lora(parse_lora(text))


def _check_strength(request: ImageRequest) -> None:
    strength = strength_of(request)
    if strength is None:
        return
    if not 0 < strength <= 1:
        raise UsageError(f"--strength {strength}: must be in (0, 1]", hint="e.g. --strength 0.6 (1 repaints all)")
    if int(request.num_inference_steps * strength) < 1:
        raise UsageError(f"--steps {request.num_inference_steps} at --strength {strength} runs no step",
                         hint=f"use --steps {int(1 / strength) + 1} or more")


def _check_refiner(request: ImageRequest, spec: ModelSpec, task: str) -> None:
    """--refiner with SDXL text-to-image; the refiner model is found now, not after the base has loaded. A refiner
    model or split without --refiner (from a preset or a job line) would do nothing: refused."""
    from ..registry import load_registry

    if not request.refiner:
        unused = [flag for flag, name in (("--refiner-model", "refiner_model"), ("--refiner-split", "denoising_split"))
                  if getattr(request, name) != _DEFAULTS[name]]
        if unused:
            raise UsageError(f"{' and '.join(unused)} without --refiner would do nothing",
                             hint="add --refiner (SDXL text-to-image), or drop " + " and ".join(unused))
        return
    if not family(spec.family).refiner or task != "txt2img":
        raise UsageError("--refiner works with SDXL text-to-image only",
                         hint="drop --refiner, or use an SDXL model without --image")
    if not 0 < request.denoising_split < 1:
        raise UsageError(f"--refiner-split {request.denoising_split}: must be between 0 and 1",
                         hint="e.g. --refiner-split 0.8 (the base runs 80% of the steps)")
    refiner = load_registry().resolve(request.refiner_model, "image")
    if not family(refiner.family).refiner:
        raise UsageError(f"--refiner-model {refiner.id}: not an SDXL model", hint="use --refiner-model sdxl-refiner")


@dataclass(frozen=True)
class Lora:
    source: str
    scale: float

    @property
    def name(self) -> str:
        return Path(self.source).stem if Path(self.source).suffix else Path(self.source).name

    def to_dict(self) -> dict:
        return {"name": self.name, "source": self.source, "scale": self.scale}


def parse_lora(text: str) -> Lora:
    """PATH_OR_REPO[:SCALE]; a trailing number after the last colon is the scale (default 1.0)."""
    source, _, scale = text.rpartition(":")
    if source and scale:
        try:
            number = float(scale)
        except ValueError:
            number = None
        if number is not None:
            if not math.isfinite(number):
                raise UsageError(f"--lora {text}: the scale must be a finite number, got {scale}")
            return Lora(source, number)
    if not text:
        raise UsageError("--lora: empty")
    return Lora(text, 1.0)


def check_lora(lora: Lora) -> None:
    path = Path(lora.source).expanduser()
    if path.is_file() and path.suffix != ".safetensors":
        raise UsageError(f"--lora {lora.source}: only .safetensors LoRA files are loaded (pickles can run code)",
                         hint="use the .safetensors version of the LoRA")
    if not path.exists() and (path.suffix or not HUB_ID.match(lora.source)):
        raise UsageError(f"--lora {lora.source}: no such file or folder (nor a hub repo id ORG/NAME)",
                         hint="check the path; a scale goes after a colon: --lora style.safetensors:0.8")
