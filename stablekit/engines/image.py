"""Text-to-image with the Stable Diffusion families through diffusers."""

from __future__ import annotations

import inspect
import secrets
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

from .. import __version__, hub
from ..console import Progress
from ..devices import Workload, apply, torch_dtype
from ..errors import UsageError
from ..loading import load_diffusers
from ..outputs import OutputOptions, finish_before_interrupt, target_path
from ..planning import Prepared
from ..provenance import record
from ..requests import ImageRequest
from ..writers.png import write_png
from ..writers.sidecar import write_sidecar

EXTENSIONS = (".png",)
# Registry defaults that are pipeline-call arguments rather than request fields.
_PIPELINE_EXTRAS = ("max_sequence_length", "skip_guidance_layers")


def workload(request: ImageRequest) -> Workload:
    return Workload(width=request.width, height=request.height, batch=min(request.batch_size, request.num_images))


def validate(request: ImageRequest, spec) -> None:
    """Reject what the pipeline would choke on, before anything is loaded."""
    if not request.prompt.strip():
        raise UsageError("the prompt is empty")
    if "txt2img" not in spec.tasks:
        raise UsageError(f"{spec.id} cannot make an image from text (it does: {', '.join(spec.tasks)})")
    multiple = int(spec.limits.get("size_multiple", 8))
    for name in ("width", "height"):
        value = getattr(request, name)
        if value is None or value <= 0 or value % multiple:
            raise UsageError(f"--{name} {value}: must be a positive multiple of {multiple} for {spec.id}")
    for name, flag in (("num_inference_steps", "--steps"), ("num_images", "--count"), ("batch_size", "--batch-size")):
        if getattr(request, name) < 1:
            raise UsageError(f"{flag} {getattr(request, name)}: must be at least 1")
    if request.guidance_scale < 0:
        raise UsageError(f"--guidance {request.guidance_scale}: must not be negative")


def with_seed(request: ImageRequest) -> ImageRequest:
    """A request whose seed is fixed: the user's, or one drawn now so the run can be repeated."""
    return request if request.seed is not None else replace(request, seed=secrets.randbelow(2**32))


def generate(prepared: Prepared, request: ImageRequest, output: OutputOptions, progress: Progress = Progress(),
             on_output: Callable[[dict], None] = lambda item: None) -> list[Path]:
    """Load once, render `num_images` (image i uses seed + i), write each image as soon as it is done."""
    import torch

    spec, plan = prepared.spec, prepared.plan
    if request.seed is None:
        request = with_seed(request)
        progress.note(f"seed {request.seed} (drawn; pass --seed {request.seed} to repeat)")
    folder = hub.ensure_local(spec)
    progress.stage(f"Loading {spec.id} ({plan.dtype} on {plan.device}, offload {plan.offload})")
    pipe = apply(load_diffusers(spec, folder, torch_dtype(plan)), plan)
    pipe.set_progress_bar_config(disable=True)
    accepted = inspect.signature(pipe.__call__).parameters
    extras = {k: spec.defaults[k] for k in _PIPELINE_EXTRAS if k in spec.defaults and k in accepted}
    sampler = type(pipe.scheduler).__name__
    written: list[Path] = []
    for start in range(0, request.num_images, request.batch_size):
        seeds = [request.seed + i for i in range(start, min(start + request.batch_size, request.num_images))]
        generators = [torch.Generator(plan.generator_device).manual_seed(s) for s in seeds]
        label = f"image {start + 1}" + (f"-{start + len(seeds)}" if len(seeds) > 1 else "") + f"/{request.num_images}"
        with progress.task(label, total=request.num_inference_steps) as advance, torch.inference_mode():
            def on_step(_pipe, _step, _timestep, tensors):
                advance()
                return tensors

            images = pipe(prompt=[request.prompt] * len(seeds),
                          negative_prompt=[request.negative_prompt] * len(seeds) if request.negative_prompt else None,
                          width=request.width, height=request.height,
                          num_inference_steps=request.num_inference_steps, guidance_scale=request.guidance_scale,
                          generator=generators, callback_on_step_end=on_step, output_type="pil", **extras).images
        for offset, (image, seed) in enumerate(zip(images, seeds, strict=True)):
            index = start + offset
            params = {**asdict(request), **extras, "seed": seed, "index": index, "scheduler": sampler,
                      "model": spec.id, "stablekit_version": __version__}
            path = target_path(output, model=spec.id, seed=seed, index=index, count=request.num_images,
                               prompt=request.prompt, extension=".png")
            # The PNG carries what decides its pixels, so re-rendering image i alone gives the same bytes.
            embedded = {k: v for k, v in params.items() if k not in ("num_images", "index")}
            with finish_before_interrupt():
                path = write_png(image, path, embedded, overwrite=output.overwrite)
                sidecar = write_sidecar(path, record(spec=spec, model_path=str(folder), parameters=params,
                                                     plan=plan, output=path.name))
                written.append(path)
                on_output({"path": str(path), "seed": seed, "index": index, "model": spec.id,
                           "sidecar": str(sidecar)})
    return written
