"""What `stablekit image` checks before anything loads: the request against the model, LoRA names, inputs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import UsageError
from ..families import family
from ..params import ImageRequest
from ..registry import HUB_ID, ModelSpec


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


def validate(request: ImageRequest, spec: ModelSpec) -> None:
    """Reject what the pipeline would choke on, before anything is loaded."""
    from .. import schedulers

    if not request.prompt.strip():
        raise UsageError("the prompt is empty")
    task = task_of(request)
    if request.mask and not request.image:
        raise UsageError("--mask needs --image (the picture to paint into)")
    if task not in spec.tasks:
        raise UsageError(f"{spec.id} cannot do {task} (it does: {', '.join(spec.tasks)})")
    multiple = int(spec.limits.get("size_multiple", 8))
    for name in ("width", "height"):
        value = getattr(request, name)
        if value is None and request.image:
            continue  # taken from the input image
        if value is None or value <= 0 or value % multiple:
            raise UsageError(f"--{name} {value}: must be a positive multiple of {multiple} for {spec.id}")
    for name, flag in (("num_inference_steps", "--steps"), ("num_images", "--count"), ("batch_size", "--batch-size")):
        if getattr(request, name) < 1:
            raise UsageError(f"{flag} {getattr(request, name)}: must be at least 1")
    if request.guidance_scale < 0:
        raise UsageError(f"--guidance {request.guidance_scale}: must not be negative")
    if request.strength is not None and not request.image:
        raise UsageError("--strength needs --image")
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
        raise UsageError(f"--strength {strength}: must be in (0, 1]")
    if int(request.num_inference_steps * strength) < 1:
        raise UsageError(f"--steps {request.num_inference_steps} at --strength {strength} runs no step",
                         hint=f"use --steps {int(1 / strength) + 1} or more")


def _check_refiner(request: ImageRequest, spec: ModelSpec, task: str) -> None:
    """--refiner with SDXL text-to-image; the refiner model is found now, not after the base has loaded."""
    from ..registry import load_registry

    if not request.refiner:
        return
    if not family(spec.family).refiner or task != "txt2img":
        raise UsageError("--refiner works with SDXL text-to-image only")
    if not 0 < request.denoising_split < 1:
        raise UsageError(f"--refiner-split {request.denoising_split}: must be between 0 and 1")
    refiner = load_registry().resolve(request.refiner_model, "image")
    if not family(refiner.family).refiner:
        raise UsageError(f"--refiner-model {refiner.id}: not an SDXL model")


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
            return Lora(source, float(scale))
        except ValueError:
            pass
    if not text:
        raise UsageError("--lora: empty")
    return Lora(text, 1.0)


def check_lora(lora: Lora) -> None:
    path = Path(lora.source).expanduser()
    if path.is_file() and path.suffix != ".safetensors":
        raise UsageError(f"--lora {lora.source}: only .safetensors LoRA files are loaded (pickles can run code)")
    if not path.exists() and (path.suffix or not HUB_ID.match(lora.source)):
        raise UsageError(f"--lora {lora.source}: no such file or folder (nor a hub repo id ORG/NAME)")
