"""Text-to-audio with Stable Audio Open through diffusers' StableAudioPipeline.

The model renders a fixed window (47.55 s for Stable Audio Open) conditioned on where the clip starts and
ends in it; the clip is cut from the decoded window to the requested length, to the sample. All waveforms
of a job are rendered in one batch (waveform i uses seed + i) and written as soon as they are decoded.
"""

from __future__ import annotations

import inspect
import json
import math
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from .. import __version__
from ..console import Progress
from ..devices import Workload
from ..errors import StablekitError, UsageError
from ..loading import load_placed
from ..params import AudioRequest
from ..planning import Plan, plan_device
from ..registry import ModelSpec
from ..sink import Output, Written
from ..writers.audio import EXTENSIONS, AudioFormat, audio_format, write_audio
from .image_checks import ignored_negative

__all__ = ["EXTENSIONS", "AudioSession", "load", "output_format", "plan", "session_key", "validate", "with_length",
           "workload"]
DEFAULT_EXTENSION = ".wav"
_SLACK_S = 1e-9  # float noise in start + length


def length_of(request: AudioRequest) -> float:
    """The clip's length in seconds (what --seconds sets)."""
    return request.audio_end_in_s - request.audio_start_in_s


def with_length(request: AudioRequest, *, seconds: float | None = None, start: float | None = None) -> AudioRequest:
    """Apply --seconds (the clip's length) and --start (where it starts): the clip ends at start + length.

    Without --seconds the length is the preset's or the model's (their end minus their start), so moving
    the start keeps the length.
    """
    for flag, number in (("--seconds", seconds), ("--start", start)):
        if number is not None and not math.isfinite(number):
            raise UsageError(f"{flag} {number}: must be a finite number")
    length = seconds if seconds is not None else length_of(request)
    begin = start if start is not None else request.audio_start_in_s
    return replace(request, audio_start_in_s=begin, audio_end_in_s=begin + length)


def workload(request: AudioRequest) -> Workload:
    return Workload(seconds=round(length_of(request), 3), batch=request.num_waveforms_per_prompt,
                    guided=request.guidance_scale > 1)


def _check_window(request: AudioRequest, spec_id: str, maximum: float, loaded: bool = False) -> None:
    if request.audio_end_in_s <= maximum + _SLACK_S:
        return
    what = f"{spec_id}{' (as loaded)' if loaded else ''} renders at most {maximum:g} s"
    if request.audio_start_in_s > 0:
        raise UsageError(f"--start {request.audio_start_in_s:g} + --seconds {length_of(request):g} ends at "
                         f"{request.audio_end_in_s:g} s: {what}", hint="shorten --seconds or start earlier")
    raise UsageError(f"--seconds {length_of(request):g}: {what}", hint=f"use --seconds {maximum:g} or less")


def validate(request: AudioRequest, spec: ModelSpec) -> None:
    """Reject what the pipeline would choke on, before anything is loaded."""
    if not request.prompt.strip():
        raise UsageError("the prompt is empty")
    if "txt2audio" not in spec.tasks:
        raise UsageError(f"{spec.id} cannot make audio from text (it does: {', '.join(spec.tasks)})")
    length = length_of(request)
    if not length > 0:  # also NaN
        raise UsageError(f"--seconds {length:g}: the length must be more than 0")
    if not request.audio_start_in_s >= 0:
        raise UsageError(f"--start {request.audio_start_in_s:g}: must not be negative")
    maximum = spec.limits.get("max_audio_length_in_s")
    if maximum is not None:
        _check_window(request, spec.id, float(maximum))
    for name, flag in (("num_inference_steps", "--steps"), ("num_waveforms_per_prompt", "--count")):
        if getattr(request, name) < 1:
            raise UsageError(f"{flag} {getattr(request, name)}: must be at least 1")
    if not request.guidance_scale >= 0:
        raise UsageError(f"--guidance {request.guidance_scale}: must not be negative")


def output_format(output: str | None, bit_depth: str | None = None, normalize: bool = True) -> AudioFormat:
    """The format named by the output's extension (.wav when it has none), checked with the bit depth up front."""
    suffix = Path(output).suffix.lower() if output else ""
    return audio_format(suffix if suffix in EXTENSIONS else DEFAULT_EXTENSION, bit_depth, normalize)


def plan(job, hardware) -> Plan:
    validate(job.request, job.spec)
    fmt = output_format(job.output, job.request.bit_depth, job.request.normalize)
    return plan_device(job, workload(job.request), hardware, inputs=fmt)


def session_key(plan: Plan) -> tuple:
    p = plan.device_plan
    return ("audio", plan.spec.id, plan.spec.revision, p.device, p.dtype, p.offload)


def load(plan: Plan, progress: Progress = Progress()) -> AudioSession:
    pipe, folder = load_placed(plan, progress)
    return AudioSession(pipe, folder, progress)


def _step_callback(pipe, advance: Callable[[], None]) -> dict:
    """Progress per denoising step through whichever hook this diffusers version's pipeline has."""
    accepted = inspect.signature(pipe.__call__).parameters
    if "callback_on_step_end" in accepted:
        def on_step_end(_pipe, _step, _timestep, tensors):
            advance()
            return tensors

        return {"callback_on_step_end": on_step_end}
    if "callback" in accepted:
        return {"callback": lambda _step, _timestep, _latents: advance(), "callback_steps": 1}
    return {}


class AudioSession:
    """A loaded Stable Audio pipeline: each job's waveforms render together (waveform i uses seed + i)."""

    def __init__(self, pipe, folder: Path, progress: Progress) -> None:
        self.pipe, self.folder, self.progress = pipe, folder, progress

    def close(self) -> None:
        self.pipe = None

    def run(self, plan: Plan, sink, inputs: dict | None = None) -> None:
        import numpy as np
        import torch

        pipe, request, spec, progress = self.pipe, plan.request, plan.spec, self.progress
        sample_rate = int(pipe.vae.config.sampling_rate)
        channels = int(pipe.vae.config.audio_channels)
        window = int(pipe.transformer.config.sample_size) * int(pipe.vae.hop_length)  # samples the model renders
        _check_window(request, spec.id, window / sample_rate, loaded=True)
        frames = round(length_of(request) * sample_rate)
        if frames < 1:
            raise UsageError(f"--seconds {length_of(request):g}: shorter than one sample at {sample_rate} Hz")
        first = max(0, min(round(request.audio_start_in_s * sample_rate), window - frames))
        count = request.num_waveforms_per_prompt
        seeds = [request.seed + i for i in range(count)]
        generators = [torch.Generator(plan.device_plan.generator_device).manual_seed(s) for s in seeds]
        label = f"audio {length_of(request):g} s" + (f" x{count}" if count > 1 else "")
        if ignored_negative(request):
            progress.note(f"Warning: {ignored_negative(request)}")
        with progress.task(label, total=request.num_inference_steps) as advance, torch.inference_mode():
            # Latents out, decoded and cut here: the pipeline cuts at int(seconds * rate), a sample short at times.
            latents = pipe(prompt=request.prompt, negative_prompt=request.negative_prompt or None,
                           audio_start_in_s=request.audio_start_in_s, audio_end_in_s=request.audio_end_in_s,
                           num_inference_steps=request.num_inference_steps, guidance_scale=request.guidance_scale,
                           num_waveforms_per_prompt=count, generator=generators, output_type="latent",
                           **_step_callback(pipe, advance)).audios
        progress.stage("Decoding")
        with torch.inference_mode():
            audio = pipe.vae.decode(latents).sample[:, :, first:first + frames]
            pipe.maybe_free_model_hooks()
        waveforms = audio.float().cpu().numpy()
        if not np.isfinite(waveforms).all():
            raise StablekitError(f"{spec.id} produced invalid samples (NaN or infinity); nothing written",
                                 hint="try --dtype float32" if plan.device_plan.dtype != "float32" else None)
        details = {"scheduler": type(pipe.scheduler).__name__, "sample_rate": sample_rate, "channels": channels,
                   "frames": frames}
        for index, (waveform, seed) in enumerate(zip(waveforms, seeds, strict=True)):
            sink.emit(plan.job, self._output(plan, waveform, seed, index, details))

    def _output(self, plan: Plan, waveform, seed: int, index: int, details: dict) -> Output:
        fmt, request, spec = plan.inputs, plan.request, plan.spec
        params = {**plan.job.to_dict(), **details, "seed": seed, "index": index, "model": spec.id,
                  "format": fmt.container, "subtype": fmt.subtype, "bit_depth": fmt.bit_depth}
        if ignored_negative(request):
            params["ignored"] = {"negative_prompt": ignored_negative(request)}
        sample_rate = details["sample_rate"]

        def write(path: Path, overwrite: bool) -> Written:
            tags = None
            if request.metadata:
                embedded = {**params, "command": "audio", "stablekit_version": __version__}
                tags = {"title": request.prompt, "software": f"stablekit {__version__} ({spec.id})",
                        "comment": _json(embedded)}
            written, level = write_audio(waveform.T, sample_rate, path, fmt, tags=tags, overwrite=overwrite)
            _report_level(self.progress, written, level, fmt)
            return Written(written, parameters=level.to_dict())  # the level is known once written

        info = {"sample_rate": sample_rate, "channels": details["channels"],
                "seconds": details["frames"] / sample_rate}
        return Output("audio", DEFAULT_EXTENSION, write, params, plan, self.folder, seed=seed, name=request.prompt,
                      info=info)


def _json(params: dict) -> str:
    return json.dumps(params, sort_keys=True, default=str)


def _report_level(progress: Progress, path: Path, level, fmt: AudioFormat) -> None:
    if level.clipped:
        progress.note(f"{path.name}: {level.clipped} samples beyond full scale clipped (--no-normalize)")
    elif level.gain_db < 0:
        why = (f"its peak was {level.to_dict()['model_peak_dbfs']:+.1f} dBFS" if level.peak > 1
               else "Vorbis decoding overshot full scale")
        progress.note(f"{path.name}: lowered {-level.gain_db:.1f} dB to stay within full scale ({why}; "
                      f"--no-normalize clips instead)")
