"""Video with Stable Video Diffusion through diffusers' StableVideoDiffusionPipeline: image-to-video, and
text-to-video through an image model first.

The first frame is the input image, scaled to cover the video's size and centre-cropped, or an image drawn
from the prompt by the image engine at the video's size (the same seed). The latents are denoised with
progress per step, then decoded here chunk by chunk (the device plan's decode chunk size, or --decode-chunk)
with progress per chunk, exactly as the pipeline would decode them.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .. import __version__
from ..console import Progress
from ..devices import Workload
from ..errors import StablekitError, UsageError
from ..image_inputs import cover, load_image, to_rgb
from ..loading import load_placed
from ..outputs import OutputOptions, check_template
from ..params import VideoRequest
from ..planning import Plan, plan_device
from ..registry import ModelSpec
from ..sink import Output, Written
from ..writers.video import EXTENSIONS, FRAMES, GIF_MAX_FPS, WEBP_MAX_FPS, EncodingError, write_video

__all__ = ["EXTENSIONS", "FirstFrame", "VideoSession", "check_output", "fit_image", "load", "output_extension",
           "plan", "session_key", "validate", "workload"]
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


def output_extension(output: str | None) -> str:
    """.mp4, .gif or .webp by the output's extension; "" (a folder of PNG frames) for a name without one;
    .mp4 without a name."""
    if not output:
        return DEFAULT_EXTENSION
    return Path(output).suffix.lower()


def check_output(request: VideoRequest, output: str | None) -> None:
    """Unknown template fields, formats and frame rates a format cannot hold fail before anything is loaded."""
    check_template(OutputOptions(output=output), EXTENSIONS)
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


def plan(job, hardware) -> Plan:
    """Check the request, read --image (or plan the image model's first frame), and plan SVD; --decode-chunk
    replaces the plan's decode chunk size, and the reasons say so."""
    from . import image

    request = job.request
    validate(request, job.spec)
    image.check_decoder(job.spec, request.decoder)  # SVD's temporal VAE has no tiny twin: refused
    check_output(request, job.output)
    first, stages = None, ()
    if request.image:
        first = fit_image(request.image, request.width, request.height)
    else:
        template = job.output or "{prompt}-{seed}"
        keep_as = str(Path(template).with_suffix(".png")) if request.keep_image else None
        stages = (image.stage(job, request.prompt, hardware, role="the first frame", keep_as=keep_as),)
    return plan_svd(job, hardware, stages=stages, inputs=first)


def plan_svd(job, hardware, *, stages: tuple = (), inputs: Any = None) -> Plan:
    """The device plan alone (a pure function of the job and the hardware)."""
    request = job.request
    planned = plan_device(job, workload(request), hardware, stages=stages, inputs=inputs)
    chunk = request.decode_chunk_size
    if chunk is None:
        return planned
    device_plan = planned.device_plan
    used = min(chunk, request.num_frames)
    reasons = tuple(r for r in device_plan.reasons if not r.startswith("video: decode"))
    reasons += (f"video: decode {used} frame{'s' if used != 1 else ''} at a time: asked for with --decode-chunk",)
    return replace(planned, device_plan=replace(device_plan, decode_chunk_size=used, reasons=reasons))


def session_key(plan: Plan) -> tuple:
    p = plan.device_plan
    return ("video", plan.spec.id, plan.spec.revision, p.device, p.dtype, p.offload)


def load(plan: Plan, progress: Progress = Progress()) -> VideoSession:
    pipe, folder = load_placed(plan, progress)
    return VideoSession(pipe, folder, progress)


class VideoSession:
    """A loaded SVD pipeline: one video per job, from its first frame (read, or drawn by the image stage)."""

    def __init__(self, pipe, folder: Path, progress: Progress) -> None:
        self.pipe, self.folder, self.progress = pipe, folder, progress

    def close(self) -> None:
        self.pipe = None

    def run(self, plan: Plan, sink, inputs: dict | None = None) -> None:
        request = plan.request
        if plan.inputs is not None:
            first = plan.inputs
            self.progress.note(first.rule)
        else:
            drawn = (inputs or {})["image"][0]
            first = FirstFrame(cover(to_rgb(drawn), request.width, request.height),
                               f"first frame drawn by {plan.stages[0].spec.id} at {request.width}x{request.height}")
        frames, details = self._render(plan, first)
        params = {**plan.job.to_dict(), **details, "input_rule": first.rule,
                  "format": output_extension(plan.job.output)[1:] or FRAMES, "model": plan.spec.id}
        if plan.stages:
            kept = (inputs or {}).get("image_results", [{}])[0].get("path")
            params["image_parameters"] = {**plan.stages[0].job.to_dict(), "kept": kept}
        else:  # image-to-video: no image model was involved
            params.pop("image_model")
            params.pop("keep_image")
        self._emit(plan, sink, frames, params)

    def _render(self, plan: Plan, first: FirstFrame):
        """SVD from the first frame to uint8 frames (count x height x width x 3), and what to record about it."""
        import numpy as np
        import torch

        pipe, request, device_plan = self.pipe, plan.request, plan.device_plan
        count = request.num_frames
        chunk = min(request.decode_chunk_size or device_plan.decode_chunk_size or count, count)
        generator = torch.Generator(device_plan.generator_device).manual_seed(request.seed)

        def on_step(_pipe, _step, _timestep, tensors):
            advance()
            return tensors

        label = f"video {count} frames {request.width}x{request.height}"
        with self.progress.task(label, total=request.num_inference_steps) as advance, torch.inference_mode():
            # Latents out, decoded below chunk by chunk: the pipeline's own decode reports no progress.
            latents = pipe(image=first.image, height=request.height, width=request.width, num_frames=count,
                           fps=request.fps, motion_bucket_id=request.motion_bucket_id,
                           noise_aug_strength=request.noise_aug_strength,
                           num_inference_steps=request.num_inference_steps,
                           min_guidance_scale=request.min_guidance_scale,
                           max_guidance_scale=request.max_guidance_scale,
                           generator=generator, output_type="latent", callback_on_step_end=on_step).frames
        video = _decode(pipe, latents, count, chunk, self.progress)
        if not np.isfinite(video).all():
            raise StablekitError(f"{plan.spec.id} produced invalid frames (NaN or infinity); nothing written",
                                 hint="try --dtype float32" if device_plan.dtype != "float32" else "try another seed")
        frames = (np.clip(video, 0.0, 1.0) * 255).round().astype(np.uint8)
        return frames, {"decode_chunk_size": chunk, "scheduler": type(pipe.scheduler).__name__}

    def _emit(self, plan: Plan, sink, frames, params: dict) -> None:
        request = plan.request
        comment = _json({**params, "command": "video", "stablekit_version": __version__})
        name = Path(request.image).stem if request.image else request.prompt
        info = {"frames": len(frames), "fps": request.fps, "width": frames.shape[2], "height": frames.shape[1]}

        def write(path: Path, overwrite: bool) -> Written:
            video = write_video(frames, request.fps, path, comment=comment if request.metadata else None,
                                overwrite=overwrite)
            if video.padded:
                self.progress.note(f"{video.path.name}: padded to {video.width}x{video.height} "
                                   "(H.264 needs even sizes)")
            return Written(video.path, info={"width": video.width, "height": video.height})

        kind = "frames" if output_extension(plan.job.output) == "" else "video"
        try:
            sink.emit(plan.job, Output(kind, output_extension(plan.job.output), write, params, plan, self.folder,
                                       seed=request.seed, name=name, info=info))
        except EncodingError as err:
            kept_at = err.kept
            if kept_at is not None:  # the frames are safe: say where, with their sidecar, then fail
                kept = {**params, "format": FRAMES, "requested_format": params["format"], "error": err.message}
                sink.emit(plan.job, Output(FRAMES, "", lambda _path, _overwrite: Written(kept_at), kept, plan,
                                           self.folder, seed=request.seed, name=name, info=info))
            raise


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
