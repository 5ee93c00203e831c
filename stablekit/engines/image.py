"""Images with the Stable Diffusion families through diffusers: txt2img, img2img, inpainting, SDXL refiner.

The model is loaded once per run; img2img and inpainting pipelines are derived from it (`from_pipe`), the
SDXL refiner shares its text encoder and VAE. Each image is written as soon as it is decoded.
"""

from __future__ import annotations

import dataclasses
import inspect
import secrets
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from .. import __version__, hub, schedulers
from ..console import Progress
from ..devices import Workload, apply, torch_dtype
from ..errors import StablekitError, UsageError
from ..image_inputs import prepare as prepare_inputs
from ..loading import load_diffusers
from ..outputs import OutputOptions, finish_before_interrupt, target_path
from ..params import ImageRequest
from ..params import resolve as resolve_request
from ..planning import Prepared, overrides_of, prepare
from ..provenance import record
from ..registry import HUB_ID, MemoryProfile, ModelSpec, load_registry
from ..writers.image import EXTENSIONS, write_image
from ..writers.sidecar import write_sidecar

__all__ = ["EXTENSIONS", "ImageStage", "fit_inputs", "generate", "plan_spec", "plan_stage", "task_of", "validate",
           "workload"]
# Registry defaults that are pipeline-call arguments rather than request fields.
_PIPELINE_EXTRAS = ("max_sequence_length", "skip_guidance_layers")
_FP16_FIX_VAE = "sdxl-vae-fp16-fix"


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


def workload(request: ImageRequest) -> Workload:
    return Workload(width=request.width, height=request.height, batch=min(request.batch_size, request.num_images))


def validate(request: ImageRequest, spec: ModelSpec, prompts: list[str] | None = None) -> None:
    """Reject what the pipeline would choke on, before anything is loaded."""
    if not prompts and not request.prompt.strip():
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
    strength = strength_of(request)
    if strength is not None:
        if not 0 < strength <= 1:
            raise UsageError(f"--strength {strength}: must be in (0, 1]")
        if int(request.num_inference_steps * strength) < 1:
            raise UsageError(f"--steps {request.num_inference_steps} at --strength {strength} runs no step",
                             hint=f"use --steps {int(1 / strength) + 1} or more")
    if request.refiner:
        if spec.family != "sdxl" or task != "txt2img":
            raise UsageError("--refiner works with SDXL text-to-image only")
        if not 0 < request.denoising_split < 1:
            raise UsageError(f"--refiner-split {request.denoising_split}: must be between 0 and 1")
    schedulers.check(request.scheduler, spec.family)
    for text in request.loras or []:
        lora = parse_lora(text)
        path = Path(lora.source).expanduser()
        if path.is_file() and path.suffix != ".safetensors":
            raise UsageError(f"--lora {lora.source}: only .safetensors LoRA files are loaded (pickles can run code)")
        if not path.exists() and (path.suffix or not HUB_ID.match(lora.source)):
            raise UsageError(f"--lora {lora.source}: no such file or folder (nor a hub repo id ORG/NAME)")


@dataclass(frozen=True)
class InputImages:
    """--image / --mask, read, checked and sized for the pipeline."""

    image: Any
    mask: Any
    rule: str


def fit_inputs(request: ImageRequest, spec: ModelSpec) -> tuple[ImageRequest, InputImages]:
    """Read --image/--mask and settle the output size by the documented rule (before planning)."""
    multiple = int(spec.limits.get("size_multiple", 8))
    image, mask, width, height, rule = prepare_inputs(request.image, request.mask, request.width, request.height,
                                                      multiple)
    return replace(request, width=width, height=height), InputImages(image, mask, rule)


@dataclass(frozen=True)
class Lora:
    source: str
    scale: float

    @property
    def name(self) -> str:
        return Path(self.source).stem if Path(self.source).suffix else Path(self.source).name


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


def plan_spec(spec: ModelSpec, request: ImageRequest) -> ModelSpec:
    """The spec whose memory the planner sees: with --refiner, the refiner's UNet comes along."""
    if not request.refiner:
        return spec
    refiner = load_registry().resolve(request.refiner_model, "image")
    params = {**spec.memory.params, "refiner_unet": refiner.memory.params.get("unet", 0.0)}
    return replace(spec, memory=MemoryProfile(**{**asdict(spec.memory), "params": params}))


@dataclass(frozen=True)
class ImageStage:
    """An image another engine draws first from a prompt (text-to-video, text-to-3D): planned, not loaded."""

    prepared: Prepared
    request: ImageRequest


def plan_stage(model: str, prompt: str, flags: dict[str, Any], hardware=None) -> ImageStage:
    """Resolve, check and plan `--image-model` for a prompt, with the other engine's seed, size and device flags."""
    spec = load_registry().resolve(model, "image")
    request = resolve_request("image", prompt=prompt, flags={**flags, "model": model}, preset={},
                              model_defaults=spec.defaults)
    try:
        validate(request, spec)
    except UsageError as err:
        err.message = f"--image-model {spec.id}: {err.message}"
        raise
    return ImageStage(prepare(plan_spec(spec, request), workload(request), overrides_of(request), hardware), request)


@dataclass
class _Session:
    """Everything loaded once for a run."""

    pipe: Any
    refiner: Any
    folder: Path
    sampler: str
    loras: list[Lora]
    extras: dict[str, Any]


def _load(prepared: Prepared, request: ImageRequest, progress: Progress) -> _Session:
    spec, plan = prepared.spec, prepared.plan
    folder = hub.ensure_local(spec)
    progress.stage(f"Loading {spec.id} ({plan.dtype} on {plan.device}, offload {plan.offload})")
    dtype = torch_dtype(plan)
    components = {}
    if spec.family == "sdxl" and plan.dtype == "float16":
        components.update(_fp16_safe_vae(dtype, progress))
    base = load_diffusers(spec, folder, dtype, **components)
    pipe = _derive(base, task_of(request))
    refiner = None
    if request.refiner:
        refiner = _load_refiner(request, base, dtype, progress)
    sampler = schedulers.apply(pipe, request.scheduler)
    loras = [parse_lora(text) for text in request.loras or []]
    if loras:
        _load_loras(pipe, loras)
    for module in (pipe, refiner):
        if module is not None:
            apply(module, plan)
            module.set_progress_bar_config(disable=True)
    accepted = inspect.signature(pipe.__call__).parameters
    extras = {k: spec.defaults[k] for k in _PIPELINE_EXTRAS if k in spec.defaults and k in accepted}
    # Input images are already sized; pipelines that take a size get it said (some default to their own).
    extras.update({k: getattr(request, k) for k in ("width", "height") if k in accepted})
    return _Session(pipe, refiner, folder, sampler, loras, extras)


def _derive(base, task: str):
    """The pipeline for the task, sharing the loaded modules (nothing is loaded twice)."""
    if task == "txt2img":
        return base
    from diffusers import AutoPipelineForImage2Image, AutoPipelineForInpainting

    auto = AutoPipelineForInpainting if task == "inpaint" else AutoPipelineForImage2Image
    return auto.from_pipe(base)


def _fp16_safe_vae(dtype, progress: Progress) -> dict[str, Any]:
    """SDXL's VAE overflows in fp16: use the fp16-fix VAE when it is available, else let it upcast."""
    spec = load_registry().get(_FP16_FIX_VAE)
    state = hub.local_state(spec)
    if not state.ready and hub.offline():
        progress.note(f"{_FP16_FIX_VAE} is not downloaded: the SDXL VAE decodes in fp32 instead (slower)")
        return {}
    return {"vae": load_diffusers(spec, hub.ensure_local(spec), dtype)}


def _load_refiner(request: ImageRequest, base, dtype, progress: Progress):
    spec = load_registry().resolve(request.refiner_model, "image")
    if spec.family != "sdxl":
        raise UsageError(f"--refiner-model {spec.id}: not an SDXL model")
    progress.stage(f"Loading refiner {spec.id}")
    from diffusers import StableDiffusionXLImg2ImgPipeline

    shared = {"vae": base.vae, "text_encoder_2": base.text_encoder_2, "tokenizer_2": base.tokenizer_2}
    if spec.loader == "StableDiffusionXLImg2ImgPipeline":
        return load_diffusers(spec, hub.ensure_local(spec), dtype, **shared)
    # A base SDXL model used as its own refiner: an img2img pipeline over its modules.
    return StableDiffusionXLImg2ImgPipeline.from_pipe(load_diffusers(spec, hub.ensure_local(spec), dtype, **shared))


def _load_loras(pipe, loras: list[Lora]) -> None:
    names = []
    for index, lora in enumerate(loras):
        source = Path(lora.source).expanduser()
        name = f"lora{index}"
        try:
            if source.is_file():
                pipe.load_lora_weights(str(source.parent), weight_name=source.name, adapter_name=name,
                                       use_safetensors=True)
            else:
                folder = source if source.is_dir() else hub.fetch_adapter(lora.source)
                pipe.load_lora_weights(str(folder), adapter_name=name, use_safetensors=True)
        except StablekitError as err:
            err.message = f"--lora {lora.source}: {err.message}"
            raise
        except (ValueError, KeyError, OSError) as err:
            raise StablekitError(f"--lora {lora.source}: cannot load it into {type(pipe).__name__} "
                                 f"({str(err).splitlines()[0]})", hint="is it a LoRA for this model family?") from err
        names.append(name)
    pipe.set_adapters(names, adapter_weights=[lora.scale for lora in loras])


def _window_warnings(pipe, prompt: str, extras: dict[str, Any], progress: Progress) -> None:
    """Say which words a text encoder drops when the prompt is longer than its window."""
    for attribute in ("tokenizer", "tokenizer_2", "tokenizer_3"):
        tokenizer = getattr(pipe, attribute, None)
        if tokenizer is None:
            continue
        limit = extras.get("max_sequence_length", 256) if attribute == "tokenizer_3" else tokenizer.model_max_length
        ids = tokenizer(prompt, truncation=False, add_special_tokens=True).input_ids
        if len(ids) > limit:
            dropped = tokenizer.decode(ids[limit - 1:], skip_special_tokens=True).strip()
            encoder = {"tokenizer_3": "T5"}.get(attribute, "CLIP")
            progress.note(f"Warning: the prompt is {len(ids)} tokens; {encoder} reads {limit}, dropping: {dropped!r}")
            return


def _bad(images) -> bool:
    import numpy as np

    return bool(np.isnan(images).any() or images.max() <= 0)


def _decode_fp32(pipe, latents):
    """Decode final latents with the VAE in fp32: the cure for fp16 overflow (NaN or black images)."""
    import torch

    vae = pipe.vae
    original = vae.dtype
    vae.to(torch.float32)
    try:
        scaled = latents.to(torch.float32) / vae.config.scaling_factor + (getattr(vae.config, "shift_factor", 0) or 0)
        with torch.inference_mode():
            decoded = vae.decode(scaled.to(vae.device), return_dict=False)[0]
        return pipe.image_processor.postprocess(decoded, output_type="np")
    finally:
        vae.to(original)


def _render(session: _Session, request: ImageRequest, prompt: str, seeds: list[int], inputs: dict[str, Any],
            progress: Progress, label: str, generator_device: str):
    """One batch: the pipeline (and refiner), NaN check with one fp32 re-decode, PIL images out."""
    import torch

    generators = [torch.Generator(generator_device).manual_seed(seed) for seed in seeds]
    count = len(seeds)
    call: dict[str, Any] = dict(
        prompt=[prompt] * count, negative_prompt=[request.negative_prompt] * count if request.negative_prompt else None,
        num_inference_steps=request.num_inference_steps, guidance_scale=request.guidance_scale,
        generator=generators, **session.extras, **inputs)
    steps = request.num_inference_steps
    if "image" in inputs:
        call["strength"] = strength_of(request)
        steps = int(steps * call["strength"])
    final: dict[str, Any] = {}
    with progress.task(label, total=steps) as advance, torch.inference_mode():
        def on_step(pipe, _step, _timestep, tensors):
            advance()
            final["pipe"], final["latents"] = pipe, tensors.get("latents")
            return tensors

        if session.refiner is None:
            images = session.pipe(**call, output_type="np", callback_on_step_end=on_step).images
        else:
            latents = session.pipe(**call, output_type="latent", denoising_end=request.denoising_split,
                                   callback_on_step_end=on_step).images
            images = session.refiner(prompt=call["prompt"], negative_prompt=call["negative_prompt"], image=latents,
                                     num_inference_steps=request.num_inference_steps,
                                     denoising_start=request.denoising_split, guidance_scale=request.guidance_scale,
                                     generator=generators, output_type="np", callback_on_step_end=on_step).images
    if _bad(images) and final.get("latents") is not None:
        progress.note("the decoded image is NaN or black (fp16 VAE overflow): decoding again in fp32")
        images = _decode_fp32(final["pipe"], final["latents"])
        if _bad(images):
            raise StablekitError("the model produced NaN or black images, even decoded in fp32",
                                 hint="try --dtype float32 or bfloat16, or another seed")
    return session.pipe.image_processor.numpy_to_pil(images)


def generate(prepared: Prepared, request: ImageRequest, output: OutputOptions, progress: Progress = Progress(),
             on_output: Callable[[dict], None] = lambda item: None, prompts: list[str] | None = None,
             metadata: bool = True, source: InputImages | None = None) -> list[Path]:
    """Load once, then render every prompt's images (output n of the run uses seed + n), writing each at once.

    `source` is what fit_inputs() made of --image/--mask; it is read here when not given.
    """
    if request.image and source is None:
        request, source = fit_inputs(request, prepared.spec)
    plan = prepared.plan
    prompts = prompts or [request.prompt]
    if request.seed is None:
        request = replace(request, seed=secrets.randbelow(2**32))
        progress.note(f"seed {request.seed} (drawn; pass --seed {request.seed} to repeat)")
    inputs: dict[str, Any] = {}
    if source is not None:
        inputs = {"image": source.image} | ({"mask_image": source.mask} if source.mask is not None else {})
    session = _load(prepared, request, progress)
    total = len(prompts) * request.num_images
    written: list[Path] = []
    number = 0
    for prompt in prompts:
        _window_warnings(session.pipe, prompt, session.extras, progress)
        for start in range(0, request.num_images, request.batch_size):
            size = min(request.batch_size, request.num_images - start)
            seeds = [request.seed + number + i for i in range(size)]
            batch_inputs = _batched(inputs, size)
            label = f"image {number + 1}" + (f"-{number + size}" if size > 1 else "") + f"/{total}"
            images = _render(session, request, prompt, seeds, batch_inputs, progress, label, plan.generator_device)
            for image, seed in zip(images, seeds, strict=True):
                written.append(_write(image, seed, number, total, prompt, request, session, prepared, output,
                                      metadata, on_output))
                number += 1
    return written


def _batched(inputs: dict[str, Any], size: int) -> dict[str, Any]:
    """One input image (and mask) per image of the batch."""
    if "image" not in inputs:
        return inputs
    return {key: [value] * size for key, value in inputs.items()}


def _write(image, seed: int, index: int, total: int, prompt: str, request: ImageRequest, session: _Session,
           prepared: Prepared, output: OutputOptions, metadata: bool, on_output) -> Path:
    spec, plan = prepared.spec, prepared.plan
    params = {**dataclasses.asdict(request), **session.extras, "prompt": prompt, "seed": seed, "index": index,
              "strength": strength_of(request),
              "outputs_in_run": total, "task": task_of(request), "sampler": session.sampler, "model": spec.id,
              "loras": [{"name": lora.name, "source": lora.source, "scale": lora.scale} for lora in session.loras],
              "stablekit_version": __version__}
    if not request.refiner:
        params.pop("refiner_model")
        params.pop("denoising_split")
    extension = Path(output.output).suffix.lower() if output.output and Path(output.output).suffix else ".png"
    path = target_path(output, model=spec.id, seed=seed, index=index, count=total, prompt=prompt,
                       extension=extension)
    # The image carries what decides its pixels, so re-rendering image n alone gives the same bytes.
    run_only = ("num_images", "outputs_in_run", "index")  # how many were made alongside: not this image's pixels
    embedded = {k: v for k, v in params.items() if k not in run_only} if metadata else None
    with finish_before_interrupt():
        path = write_image(image, path, embedded, overwrite=output.overwrite)
        sidecar = write_sidecar(path, record(spec=spec, model_path=str(session.folder), parameters=params,
                                             plan=plan, output=path.name))
        on_output({"path": str(path), "seed": seed, "index": index, "model": spec.id, "prompt": prompt,
                   "sidecar": str(sidecar)})
    return path
