"""Video with Stable Video Diffusion through diffusers' StableVideoDiffusionPipeline: image-to-video, and
text-to-video through an image model first.

The first frame is the input image, scaled to cover the video's size and centre-cropped, or an image drawn
from the prompt by the image engine at the video's size (the same seed). The latents are denoised with
progress per step, then decoded here chunk by chunk (the device plan's decode chunk size, or --decode-chunk)
with progress per chunk, exactly as the pipeline would decode them.
"""

from __future__ import annotations

import contextlib
import gc
import json
import math
import secrets
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from .. import __version__, hub, planning
from ..console import Progress
from ..devices import Hardware, Workload, apply, torch_dtype
from ..errors import StablekitError, UsageError
from ..image_inputs import cover, load_image, to_rgb
from ..loading import load_diffusers
from ..outputs import OutputOptions, check_template, finish_before_interrupt, target_path
from ..params import VideoRequest
from ..planning import Prepared
from ..provenance import record
from ..registry import ModelSpec
from ..writers.sidecar import write_sidecar
from ..writers.video import EXTENSIONS, FRAMES, GIF_MAX_FPS, WEBP_MAX_FPS, EncodingError, write_video
from .image import ImageStage, plan_stage

__all__ = ["EXTENSIONS", "FirstFrame", "ImageStage", "check_output", "fit_image", "generate", "image_stage",
           "output_extension", "prepare", "validate", "workload"]
DEFAULT_EXTENSION = ".mp4"


def workload(request: VideoRequest) -> Workload:
    return Workload(width=request.width, height=request.height, frames=request.num_frames, batch=1)


def validate(request: VideoRequest, spec: ModelSpec) -> None:
    """Reject what the pipeline would choke on, before anything is read, loaded or drawn."""
    if "img2vid" not in spec.tasks:
        raise UsageError(f"{spec.id} does not make videos (it does: {', '.join(spec.tasks)})")
    has_prompt = bool(request.prompt.strip())
    if request.image and has_prompt:
        raise UsageError("give a prompt or --image, not both",
                         hint="SVD animates an image without a prompt; a prompt is drawn into the first frame first")
    if not request.image and not has_prompt:
        raise UsageError("missing the input: an image or a prompt",
                         hint='stablekit video --image photo.png, or stablekit video "a sailing boat at sea"')
    if request.keep_image and request.image:
        raise UsageError("--keep-image keeps the frame drawn from a prompt; with --image there is none")
    multiple = int(spec.limits.get("size_multiple", 8))
    for name in ("width", "height"):
        value = getattr(request, name)
        if value <= 0 or value % multiple:
            raise UsageError(f"--{name} {value}: must be a positive multiple of {multiple} for {spec.id}")
    maximum = spec.limits.get("max_frames")
    for name, flag in (("num_frames", "--frames"), ("fps", "--fps"), ("num_inference_steps", "--steps")):
        if getattr(request, name) < 1:
            raise UsageError(f"{flag} {getattr(request, name)}: must be at least 1")
    if maximum is not None and request.num_frames > int(maximum):
        raise UsageError(f"--frames {request.num_frames}: {spec.id} makes at most {maximum}")
    if request.decode_chunk_size is not None and request.decode_chunk_size < 1:
        raise UsageError(f"--decode-chunk {request.decode_chunk_size}: must be at least 1")
    if request.motion_bucket_id < 0:
        raise UsageError(f"--motion {request.motion_bucket_id}: must not be negative (127 is SVD's default)")
    if not request.noise_aug_strength >= 0:
        raise UsageError(f"--noise-aug {request.noise_aug_strength:g}: must not be negative")
    for name, flag in (("min_guidance_scale", "--min-guidance"), ("max_guidance_scale", "--max-guidance")):
        if not getattr(request, name) >= 0:
            raise UsageError(f"{flag} {getattr(request, name):g}: must not be negative")
    if request.min_guidance_scale > request.max_guidance_scale:
        raise UsageError(f"--min-guidance {request.min_guidance_scale:g} is above --max-guidance "
                         f"{request.max_guidance_scale:g}", hint="guidance rises from the first frame's to the last's")


def output_extension(output: OutputOptions) -> str:
    """.mp4, .gif or .webp by -o's extension; "" (a folder of PNG frames) for -o without one; .mp4 without -o."""
    if not output.output:
        return DEFAULT_EXTENSION
    return Path(output.output).suffix.lower()


def check_output(request: VideoRequest, output: OutputOptions) -> None:
    """Unknown template fields, formats and frame rates a format cannot hold fail before anything is loaded."""
    check_template(output, EXTENSIONS)
    extension = output_extension(output)
    limit = {".gif": GIF_MAX_FPS, ".webp": WEBP_MAX_FPS}.get(extension)
    if limit and request.fps > limit:
        raise UsageError(f"--fps {request.fps}: {extension[1:].upper()} plays at most {limit} fps",
                         hint="write .mp4, or lower --fps")


@dataclass(frozen=True)
class FirstFrame:
    """The conditioning image, at the video's size, and the rule that sized it."""

    image: Any
    rule: str


def fit_image(path: str, width: int, height: int, flag: str = "--image") -> FirstFrame:
    """Read an image and bring it to width x height: scaled to cover that size, centre-cropped (no distortion)."""
    source = load_image(path, flag)
    image = cover(to_rgb(source), width, height)
    w, h = source.size
    if (w, h) == (width, height):
        return FirstFrame(image, f"input {w}x{h}: the video's size")
    return FirstFrame(image, f"input {w}x{h} scaled to cover {width}x{height} and centre-cropped")


def prepare(spec: ModelSpec, request: VideoRequest, hardware: Hardware | None = None) -> Prepared:
    """The device plan; --decode-chunk replaces the plan's decode chunk size, and the reasons say so."""
    prepared = planning.prepare(spec, workload(request), planning.overrides_of(request), hardware)
    chunk = request.decode_chunk_size
    if chunk is None:
        return prepared
    plan = prepared.plan
    used = min(chunk, request.num_frames)
    reasons = tuple(r for r in plan.reasons if not r.startswith("video: decode"))
    reasons += (f"video: decode {used} frame{'s' if used != 1 else ''} at a time: asked for with --decode-chunk",)
    return replace(prepared, plan=replace(plan, decode_chunk_size=used, reasons=reasons))


def image_stage(request: VideoRequest, hardware: Hardware | None = None) -> ImageStage | None:
    """For a prompt: resolve, check and plan the image model at the video's size (nothing is loaded)."""
    if request.image:
        return None
    flags = {"seed": request.seed, "width": request.width, "height": request.height, "device": request.device,
             "dtype": request.dtype, "offload": request.offload, "vram": request.vram}
    return plan_stage(request.image_model, request.prompt, flags, hardware)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Keep library noise off the terminal (numpy's __array__ copy notice from the image processors)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*__array__.*copy", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"(diffusers|transformers|torch)(\..*)?")
        yield


def generate(prepared: Prepared, request: VideoRequest, output: OutputOptions, progress: Progress = Progress(),
             on_output: Callable[[dict], None] = lambda item: None, *, stage: ImageStage | None = None,
             first: FirstFrame | None = None) -> list[Path]:
    """One video: the first frame (read, or drawn for a prompt), SVD, decoding in chunks, the file and its sidecar.

    `first` is what fit_image() made of --image, `stage` what image_stage() planned; made here when not given.
    """
    with _quiet():
        return _generate(prepared, request, output, progress, on_output, stage, first)


def _generate(prepared, request, output, progress, on_output, stage, first) -> list[Path]:
    spec = prepared.spec
    if request.seed is None:
        request = replace(request, seed=secrets.randbelow(2**32))
        progress.note(f"seed {request.seed} (drawn; pass --seed {request.seed} to repeat)")
    extension = output_extension(output)
    name = Path(request.image).stem if request.image else request.prompt
    path = target_path(replace(output, output=output.output or "{prompt}-{seed}"), model=spec.id,
                       seed=request.seed, index=0, count=1, prompt=name, extension=extension)
    image_params = None
    if request.image:
        first = first or fit_image(request.image, request.width, request.height)
    else:
        first, image_params = _first_frame(request, stage or image_stage(request, prepared.hardware), path,
                                           output.overwrite, progress, on_output)
    frames, details, folder = _render(prepared, request, first, progress)
    params = {**asdict(request), **details, "input_rule": first.rule, "format": extension[1:] or FRAMES,
              "model": spec.id, "stablekit_version": __version__}
    if image_params is not None:
        params["image_parameters"] = image_params
    else:  # image-to-video: no image model was involved
        params.pop("image_model")
        params.pop("keep_image")
    return [_write(frames, path, params, prepared, folder, output, progress, on_output)]


def _first_frame(request: VideoRequest, stage: ImageStage, path: Path, overwrite: bool, progress: Progress,
                 on_output: Callable[[dict], None]) -> tuple[FirstFrame, dict]:
    """Draw the prompt at the video's size with the image engine: kept as NAME.png, or in a temporary folder."""
    from . import image as image_engine

    scratch = None if request.keep_image else Path(tempfile.mkdtemp(prefix="stablekit-video-"))
    try:
        target = scratch / "first-frame.png" if scratch else path.with_suffix(".png")
        image_request = replace(stage.request, seed=request.seed)
        progress.stage(f"Drawing the first frame with {stage.prepared.spec.id}")

        def report_kept(item: dict) -> None:
            if not scratch:
                on_output({**item, "kind": "image"})

        [drawn] = image_engine.generate(stage.prepared, image_request, OutputOptions(output=str(target),
                                        overwrite=overwrite), progress, on_output=report_kept)
        _free_memory(stage.prepared.plan.device)
        frame = fit_image(str(drawn), request.width, request.height, "the drawn image")
    finally:
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)
    image_params = {**asdict(image_request), "kept": None if scratch else str(drawn)}
    return FirstFrame(frame.image, f"first frame drawn by {stage.prepared.spec.id} at "
                                   f"{request.width}x{request.height}"), image_params


def _free_memory(device: str) -> None:
    import torch

    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


def _render(prepared: Prepared, request: VideoRequest, first: FirstFrame, progress: Progress):
    """SVD from the first frame to uint8 frames (count x height x width x 3), and what to record about it."""
    import numpy as np
    import torch

    spec, plan = prepared.spec, prepared.plan
    folder = hub.ensure_local(spec)
    progress.stage(f"Loading {spec.id} ({plan.dtype} on {plan.device}, offload {plan.offload})")
    pipe = apply(load_diffusers(spec, folder, torch_dtype(plan)), plan)
    pipe.set_progress_bar_config(disable=True)
    count = request.num_frames
    chunk = min(request.decode_chunk_size or plan.decode_chunk_size or count, count)
    generator = torch.Generator(plan.generator_device).manual_seed(request.seed)

    def on_step(_pipe, _step, _timestep, tensors):
        advance()
        return tensors

    label = f"video {count} frames {request.width}x{request.height}"
    with progress.task(label, total=request.num_inference_steps) as advance, torch.inference_mode():
        # Latents out, decoded below chunk by chunk: the pipeline's own decode reports no progress.
        latents = pipe(image=first.image, height=request.height, width=request.width, num_frames=count,
                       fps=request.fps, motion_bucket_id=request.motion_bucket_id,
                       noise_aug_strength=request.noise_aug_strength,
                       num_inference_steps=request.num_inference_steps,
                       min_guidance_scale=request.min_guidance_scale, max_guidance_scale=request.max_guidance_scale,
                       generator=generator, output_type="latent",
                       callback_on_step_end=on_step).frames
    video = _decode(pipe, latents, count, chunk, progress)
    if not np.isfinite(video).all():
        raise StablekitError(f"{spec.id} produced invalid frames (NaN or infinity); nothing written",
                             hint="try --dtype float32" if plan.dtype != "float32" else "try another seed")
    frames = (np.clip(video, 0.0, 1.0) * 255).round().astype(np.uint8)
    details = {"decode_chunk_size": chunk, "scheduler": type(pipe.scheduler).__name__}
    del pipe
    _free_memory(plan.device)
    return frames, details, folder


def _decode(pipe, latents, count: int, chunk: int, progress: Progress):
    """What StableVideoDiffusionPipeline.decode_latents does, one chunk of frames at a time with progress.

    The temporal decoder mixes the frames within a chunk, so the chunk size changes the pixels slightly.
    """
    import torch

    vae = pipe.vae
    flat = latents.flatten(0, 1) / vae.config.scaling_factor
    parts = []
    chunks = math.ceil(flat.shape[0] / chunk)
    label = f"decode {count} frames" + (f", {chunk} at a time" if chunks > 1 else "")
    with progress.task(label, total=chunks) as advance, torch.inference_mode():
        for start in range(0, flat.shape[0], chunk):
            piece = flat[start:start + chunk].to(vae.dtype)
            parts.append(vae.decode(piece, num_frames=piece.shape[0]).sample.float().cpu())
            advance()
    pipe.maybe_free_model_hooks()
    decoded = torch.cat(parts).reshape(-1, count, *parts[0].shape[1:]).permute(0, 2, 1, 3, 4)
    return pipe.video_processor.postprocess_video(video=decoded, output_type="np")[0]


def _json(params: dict) -> str:
    return json.dumps(params, sort_keys=True, default=str, separators=(",", ":"))


def _write(frames, path: Path, params: dict, prepared: Prepared, folder: Path, output: OutputOptions,
           progress: Progress, on_output: Callable[[dict], None]) -> Path:
    spec, plan = prepared.spec, prepared.plan
    comment = _json(params)

    def report(written: Path, kind: str, **changes) -> dict:
        sidecar = write_sidecar(written, record(spec=spec, model_path=str(folder), parameters={**params, **changes},
                                                plan=plan, output=written.name))
        item = {"path": str(written), "kind": kind, "seed": params["seed"], "model": spec.id,
                "frames": len(frames), "fps": params["fps"], "width": frames.shape[2], "height": frames.shape[1],
                "sidecar": str(sidecar)}
        on_output(item)
        return item

    with finish_before_interrupt():
        try:
            video = write_video(frames, params["fps"], path, comment=comment, overwrite=output.overwrite)
        except EncodingError as err:
            if err.kept is not None:
                # The frames are safe: say where, with their sidecar, then fail.
                report(err.kept, FRAMES, format=FRAMES, requested_format=params["format"], error=err.message)
            raise
        if video.padded:
            progress.note(f"{video.path.name}: padded to {video.width}x{video.height} (H.264 needs even sizes)")
        report(video.path, "frames" if video.format == FRAMES else "video")
    return video.path
