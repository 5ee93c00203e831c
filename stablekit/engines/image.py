"""Images with the Stable Diffusion families through diffusers: txt2img, img2img, inpainting, SDXL refiner.

A session holds one loaded pipeline (and refiner); img2img and inpainting pipelines are derived from it
(`from_pipe`), the SDXL refiner shares its text encoder and VAE. Each image goes to the sink as soon as it
is decoded; image i of a job uses seed + i.
"""

from __future__ import annotations

import inspect
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from .. import __version__, hub, schedulers
from ..console import Progress
from ..devices import Workload, place, torch_dtype
from ..errors import StablekitError, UsageError
from ..families import family
from ..image_inputs import read_inputs
from ..loading import load_diffusers
from ..planning import Plan, plan_device
from ..registry import MemoryProfile, ModelSpec, load_registry
from ..sink import Output, Written
from ..writers.image import EXTENSIONS, write_image
from .image_checks import Lora, ignored, parse_lora, strength_of, task_of, validate

__all__ = ["EXTENSIONS", "ImageSession", "load", "plan", "session_key", "task_of", "validate"]
# Registry defaults that are pipeline-call arguments rather than request fields.
_PIPELINE_EXTRAS = ("max_sequence_length", "skip_guidance_layers")
_FP16_FIX_VAE = "sdxl-vae-fp16-fix"
# How many were made alongside: not this image's pixels, so not embedded in it.
_RUN_ONLY = ("num_images", "outputs_in_run", "index")


@dataclass(frozen=True)
class InputImages:
    """--image / --mask, read, checked and sized for the pipeline."""

    image: Any
    mask: Any
    rule: str


def workload(request) -> Workload:
    return Workload(width=request.width, height=request.height, batch=min(request.batch_size, request.num_images),
                    guided=request.guidance_scale > 1)


def plan(job, hardware) -> Plan:
    """Check the request, read --image/--mask (they settle the size), and plan the model (with its refiner)."""
    spec = job.spec
    validate(job.request, spec)
    inputs = None
    if job.request.image:
        multiple = int(spec.limits.get("size_multiple", 8))
        image, mask, width, height, rule = read_inputs(job.request.image, job.request.mask, job.request.width,
                                                       job.request.height, multiple)
        job = job.with_request(width=width, height=height)
        inputs = InputImages(image, mask, rule)
    check_decoder(spec, job.request.decoder)
    planned = plan_device(job, workload(job.request), hardware, _memory_spec(spec, job.request), inputs=inputs)
    _check_fast(job.request, planned.device_plan.device)
    return planned


def _memory_spec(spec: ModelSpec, request) -> ModelSpec:
    """The spec whose memory the planner sees: with --refiner, the refiner's UNet comes along."""
    if not request.refiner:
        return spec
    refiner = load_registry().resolve(request.refiner_model, "image")
    params = {**spec.memory.params, "refiner_unet": refiner.memory.params.get("unet", 0.0)}
    return replace(spec, memory=MemoryProfile(**{**asdict(spec.memory), "params": params}))


def session_key(plan: Plan) -> tuple:
    """A loaded pipeline serves every job with the same weights, task, LoRAs and placement."""
    r, p = plan.request, plan.device_plan
    return ("image", plan.spec.id, plan.spec.revision, task_of(r), tuple(r.loras or ()),
            r.refiner_model if r.refiner else None, p.device, p.dtype, p.offload, p.vae_tiling, p.vae_slicing,
            r.decoder, r.compile, r.fast)


def load(plan: Plan, progress: Progress = Progress()) -> ImageSession:
    spec, device_plan, request = plan.spec, plan.device_plan, plan.request
    folder = hub.ensure_local(spec)
    dtype = torch_dtype(device_plan)
    components = {}
    fp16_vae = family(spec.family).fp16_vae
    if request.decoder == "tiny":  # the full VAE is not loaded at all
        components["vae"] = _tiny_decoder(spec, dtype, progress)
    elif fp16_vae and device_plan.dtype == "float16":
        components.update(_fp16_safe_vae(dtype, progress))
    # Said after the decoder's own stages, so the heartbeat of the long load names the model, not the decoder.
    progress.stage(f"Loading {spec.id} ({device_plan.dtype} on {device_plan.device}, offload {device_plan.offload})")
    base = load_diffusers(spec, folder, dtype, progress, **components)
    pipe = _derive(base, task_of(request))
    refiner = _load_refiner(request, base, dtype, progress) if request.refiner else None
    loras = [parse_lora(text) for text in request.loras or []]
    if loras:
        _load_loras(pipe, loras)
    for module in (pipe, refiner):
        if module is not None:
            place(module, device_plan)
            module.set_progress_bar_config(disable=True)
            if request.compile or request.fast:
                _speed_up(module, request.fast, progress)
    return ImageSession(pipe, refiner, folder, loras, progress, compiled=request.compile or request.fast,
                        fast=request.fast)


DECODERS = ("full", "tiny")


def check_decoder(spec: ModelSpec, decoder: str) -> None:
    """--decoder full|tiny: tiny needs a tiny autoencoder for the model's family (none for SVD's temporal VAE)."""
    if decoder not in DECODERS:
        raise UsageError(f"--decoder {decoder}: unknown", hint="use full (the model's VAE) or tiny (TAESD)")
    if decoder == "tiny" and not family(spec.family).tiny_decoder:
        raise UsageError(f"--decoder tiny: {spec.id} ({spec.family}) has no tiny decoder (TAESD exists for SD 1.x/2.x, "
                         "SDXL and SD3 only)", hint="drop --decoder, or use --decoder full")


def tiny_decoder_spec(spec: ModelSpec) -> ModelSpec:
    """The family's TAESD record; a random-weight tiny model gets the random-weight twin, `tiny-<record>`."""
    name = family(spec.family).tiny_decoder
    return load_registry().get(f"tiny-{name}" if spec.tiny else name)


def _tiny_decoder(spec: ModelSpec, dtype, progress: Progress):
    decoder = tiny_decoder_spec(spec)
    progress.stage(f"Loading the tiny decoder {decoder.id} (fast, approximate: finer detail differs from the VAE's)")
    return load_diffusers(decoder, hub.ensure_local(decoder), dtype)


def _check_fast(request, device: str) -> None:
    if request.fast and not device.startswith("cuda"):
        raise UsageError(f"--fast is for CUDA GPUs (this job runs on {device})",
                         hint="on a CPU use --compile and --decoder tiny (see the README's CPU section)")


def _speed_up(pipe, fast: bool, progress: Progress) -> None:
    """torch.compile the denoiser (inductor); --fast (CUDA) also fuses its QKV projections and uses channels_last."""
    import torch

    name = "unet" if getattr(pipe, "unet", None) is not None else "transformer"
    denoiser = getattr(pipe, name, None)
    if denoiser is None:
        return
    if fast:
        if hasattr(denoiser, "fuse_qkv_projections"):
            denoiser.fuse_qkv_projections()
        if name == "unet":
            denoiser.to(memory_format=torch.channels_last)
    progress.note(f"--compile: the {name} is compiled on its first step (a one-time cost of a minute or more, "
                  f"and again for a new size); compiled code is cached in {_compile_cache_dir()}")
    denoiser.compile()


def _compile_cache_dir() -> Path:
    from ..paths import stablekit_home

    return stablekit_home() / "cache" / "torchinductor"


@contextmanager
def _compile_cache(active: bool):
    """Inductor's cache under STABLEKIT_HOME while the pipeline runs (a user's TORCHINDUCTOR_CACHE_DIR wins);
    the environment is left as it was found."""
    import os

    key = "TORCHINDUCTOR_CACHE_DIR"
    saved = os.environ.get(key)
    if active and saved is None:
        os.environ[key] = str(_compile_cache_dir())
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = saved


# --fast's order of attention kernels: cuDNN's first (the fastest at SDXL's shapes on Hopper in
# `python benchmarks/gpu.py`), then flash, memory-efficient, math; each is skipped where it cannot run.
ATTENTION_ORDER = ("CUDNN_ATTENTION", "FLASH_ATTENTION", "EFFICIENT_ATTENTION", "MATH")


@contextmanager
def _fastest_attention(active: bool):
    """--fast: scaled_dot_product_attention tries the kernels in ATTENTION_ORDER (torch >= 2.6 takes an order)."""
    if not active:
        yield
        return
    from torch.nn.attention import SDPBackend, sdpa_kernel

    try:
        chosen = sdpa_kernel([getattr(SDPBackend, name) for name in ATTENTION_ORDER], set_priority=True)
    except TypeError:  # an older torch: its own order
        chosen = nullcontext()
    with chosen:
        yield


def _derive(base, task: str):
    """The pipeline for the task, sharing the loaded modules (nothing is loaded twice)."""
    if task == "txt2img":
        return base
    from diffusers import AutoPipelineForImage2Image, AutoPipelineForInpainting

    auto = AutoPipelineForInpainting if task == "inpaint" else AutoPipelineForImage2Image
    return auto.from_pipe(base)


def _fp16_safe_vae(dtype, progress: Progress) -> dict[str, Any]:
    """SDXL's VAE overflows in fp16: use the fp16-fix VAE when it is on disk; else download it, saying so first,
    and when that cannot be done, let SDXL's own VAE upcast (said too)."""
    from ..errors import GatedModelError, ModelNotDownloadedError, ModelUnavailableError

    spec = load_registry().get(_FP16_FIX_VAE)
    fallback = "the SDXL VAE decodes in fp32 instead (slower)"
    if not hub.local_state(spec).ready:
        if hub.offline():
            progress.note(f"{_FP16_FIX_VAE} is not downloaded: {fallback}")
            return {}
        size = spec.memory.total_params * 2e6 / 1024**3
        progress.stage(f"Downloading {_FP16_FIX_VAE} ({spec.repo}, {size:.2f} GiB) once: SDXL's own VAE overflows "
                       "in float16")
        try:
            hub.ensure_local(spec)
        except (ModelNotDownloadedError, ModelUnavailableError, GatedModelError) as err:
            progress.note(f"{_FP16_FIX_VAE} could not be downloaded ({err.message}): {fallback}")
            return {}
    return {"vae": load_diffusers(spec, hub.ensure_local(spec), dtype)}


def _load_refiner(request, base, dtype, progress: Progress):
    spec = load_registry().resolve(request.refiner_model, "image")
    progress.stage(f"Loading refiner {spec.id}")
    from diffusers import StableDiffusionXLImg2ImgPipeline

    shared = {"vae": base.vae, "text_encoder_2": base.text_encoder_2, "tokenizer_2": base.tokenizer_2}
    if spec.loader == "StableDiffusionXLImg2ImgPipeline":
        return load_diffusers(spec, hub.ensure_local(spec), dtype, progress, **shared)
    # A base SDXL model used as its own refiner: an img2img pipeline over its modules.
    return StableDiffusionXLImg2ImgPipeline.from_pipe(load_diffusers(spec, hub.ensure_local(spec), dtype, progress,
                                                                          **shared))


def _load_loras(pipe, loras: list[Lora]) -> None:
    from ..checkpoints import tensor_names

    names = []
    for index, lora in enumerate(loras):
        source = Path(lora.source).expanduser()
        name = f"lora{index}"
        try:
            if source.is_file():
                tensor_names(source)  # a file that is not safetensors is said plainly (InputError), not by peft
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


class ImageSession:
    """A loaded pipeline (and refiner) that renders any number of image jobs it was loaded for."""

    def __init__(self, pipe, refiner, folder: Path, loras: list[Lora], progress: Progress, *,
                 compiled: bool = False, fast: bool = False) -> None:
        self.pipe, self.refiner, self.folder, self.loras, self.progress = pipe, refiner, folder, loras, progress
        self.compiled, self.fast = compiled, fast

    def close(self) -> None:
        self.pipe = self.refiner = None

    def run(self, plan: Plan, sink, inputs: dict | None = None) -> None:
        """Render the job's images in batches of `batch_size`, each handed to the sink as soon as it is decoded."""
        request, progress = plan.request, self.progress
        sampler = schedulers.apply(self.pipe, request.scheduler)
        extras = self._extras(plan)
        images_in: dict[str, Any] = {}
        if plan.inputs is not None:
            images_in = {"image": plan.inputs.image}
            if plan.inputs.mask is not None:
                images_in["mask_image"] = plan.inputs.mask
            progress.note(plan.inputs.rule)
        _window_warnings(self.pipe, request.prompt, extras, progress)
        for message in ignored(request, plan.spec).values():
            progress.note(f"Warning: {message}")
        total = request.num_images
        for start in range(0, total, request.batch_size):
            size = min(request.batch_size, total - start)
            seeds = [request.seed + start + i for i in range(size)]
            label = f"image {start + 1}" + (f"-{start + size}" if size > 1 else "") + f"/{total}"
            batch_in = {key: [value] * size for key, value in images_in.items()}
            images = self._render(request, seeds, {**extras, **batch_in}, label, plan.device_plan.generator_device)
            for offset, (image, seed) in enumerate(zip(images, seeds, strict=True)):
                sink.emit(plan.job, self._output(plan, image, seed, start + offset, sampler, extras))

    def _extras(self, plan: Plan) -> dict[str, Any]:
        accepted = inspect.signature(self.pipe.__call__).parameters
        defaults = plan.spec.defaults
        extras = {k: defaults[k] for k in _PIPELINE_EXTRAS if k in defaults and k in accepted}
        # Input images are already sized; pipelines that take a size get it said (some default to their own).
        extras.update({k: getattr(plan.request, k) for k in ("width", "height") if k in accepted})
        return extras

    def _render(self, request, seeds: list[int], call_extras: dict[str, Any], label: str, generator_device: str):
        """One batch: the pipeline (and refiner), NaN check with one fp32 re-decode, PIL images out."""
        import torch

        generators = [torch.Generator(generator_device).manual_seed(seed) for seed in seeds]
        count = len(seeds)
        negative = [request.negative_prompt] * count if request.negative_prompt else None
        call: dict[str, Any] = dict(prompt=[request.prompt] * count, negative_prompt=negative,
                                    num_inference_steps=request.num_inference_steps,
                                    guidance_scale=request.guidance_scale, generator=generators, **call_extras)
        steps = request.num_inference_steps
        if "image" in call_extras:
            call["strength"] = strength_of(request)
            steps = int(steps * call["strength"])
        final: dict[str, Any] = {}
        with (self.progress.task(label, total=steps, then="Decoding") as advance, torch.inference_mode(),
              _compile_cache(self.compiled), _fastest_attention(self.fast)):
            def on_step(pipe, _step, _timestep, tensors):
                advance(total=getattr(pipe, "num_timesteps", None) or steps)  # PNDM warms up with one more
                final["pipe"], final["latents"] = pipe, tensors.get("latents")
                return tensors

            if self.refiner is None:
                images = self.pipe(**call, output_type="np", callback_on_step_end=on_step).images
            else:
                latents = self.pipe(**call, output_type="latent", denoising_end=request.denoising_split,
                                    callback_on_step_end=on_step).images
                images = self.refiner(prompt=call["prompt"], negative_prompt=negative, image=latents,
                                      num_inference_steps=request.num_inference_steps,
                                      denoising_start=request.denoising_split, guidance_scale=request.guidance_scale,
                                      generator=generators, output_type="np", callback_on_step_end=on_step).images
        if _bad(images) and final.get("latents") is not None:
            self.progress.note("the decoded image is NaN or black (fp16 VAE overflow): decoding again in fp32")
            images = _decode_fp32(final["pipe"], final["latents"])
            if _bad(images):
                raise StablekitError("the model produced NaN or black images, even decoded in fp32",
                                     hint="try --dtype float32 or bfloat16, or another seed")
        return self.pipe.image_processor.numpy_to_pil(images)

    def _output(self, plan: Plan, image, seed: int, index: int, sampler: str, extras: dict[str, Any]) -> Output:
        request = plan.request
        params = {**plan.job.to_dict(), **extras, "seed": seed, "index": index, "strength": strength_of(request),
                  "outputs_in_run": request.num_images, "task": task_of(request), "sampler": sampler,
                  "model": plan.spec.id, "lora_details": [lora.to_dict() for lora in self.loras],
                  "stablekit_version": __version__}
        if not request.refiner:
            params.pop("refiner_model")
            params.pop("denoising_split")
        unused = ignored(request, plan.spec)
        if unused:
            params["ignored"] = unused  # recorded as unused, so no reader takes it for an effect
        embedded = None
        if request.metadata:
            embedded = {k: v for k, v in params.items() if k not in _RUN_ONLY and k not in unused}
            embedded["loras"] = params["lora_details"]

        def write(path: Path, overwrite: bool) -> Written:
            return Written(write_image(image, path, embedded, overwrite=overwrite))

        extension = Path(plan.job.output).suffix.lower() if plan.job.output and Path(plan.job.output).suffix else ".png"
        return Output("image", extension, write, params, plan, self.folder, seed=seed, name=request.prompt,
                      value=image)


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


def stage(job, prompt: str, hardware, *, role: str, keep_as: str | None = None) -> Plan:
    """The image another job draws first from its prompt (text-to-video, text-to-3D), planned as an image job
    of its own at that job's seed, size and device flags; kept as a file named `keep_as` when given."""
    from ..jobs import job_from

    request = job.request
    values = {"prompt": prompt, "model": request.image_model, "seed": request.seed, "output": keep_as,
              "width": getattr(request, "width", None), "height": getattr(request, "height", None),
              "device": request.device, "dtype": request.dtype, "offload": request.offload, "vram": request.vram}
    try:
        image_job = job_from("image", values, where="--image-model")
        return replace(plan(image_job, hardware), role=role)
    except UsageError as err:
        if not err.message.startswith("--image-model"):
            err.message = f"--image-model {request.image_model}: {err.message}"
        raise
