"""Text-to-audio with Stable Audio Open through diffusers' StableAudioPipeline.

The model renders a fixed window (47.55 s for Stable Audio Open) conditioned on where the clip starts and
ends in it; the clip is cut from the decoded window to the requested length, to the sample. All waveforms
of a run are rendered in one batch (waveform i uses seed + i) and written as soon as they are decoded.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import secrets
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, replace
from pathlib import Path

from .. import __version__, hub
from ..console import Progress
from ..devices import Workload, apply, torch_dtype
from ..errors import StablekitError, UsageError
from ..loading import load_diffusers
from ..outputs import OutputOptions, finish_before_interrupt, target_path
from ..params import AudioRequest
from ..planning import Prepared
from ..provenance import record
from ..registry import ModelSpec
from ..writers.audio import EXTENSIONS, AudioFormat, audio_format, write_audio
from ..writers.sidecar import write_sidecar

__all__ = ["EXTENSIONS", "generate", "output_format", "validate", "with_length", "workload"]
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
    length = seconds if seconds is not None else length_of(request)
    begin = start if start is not None else request.audio_start_in_s
    return replace(request, audio_start_in_s=begin, audio_end_in_s=begin + length)


def workload(request: AudioRequest) -> Workload:
    return Workload(seconds=round(length_of(request), 3), batch=request.num_waveforms_per_prompt)


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


def output_format(output: OutputOptions, bit_depth: str | None = None, normalize: bool = True) -> AudioFormat:
    """The format named by -o's extension (.wav when it has none), checked with --bit-depth up front."""
    suffix = Path(output.output).suffix.lower() if output.output else ""
    return audio_format(suffix if suffix in EXTENSIONS else DEFAULT_EXTENSION, bit_depth, normalize)


def with_seed(request: AudioRequest) -> AudioRequest:
    """A request whose seed is fixed: the user's, or one drawn now so the run can be repeated."""
    return request if request.seed is not None else replace(request, seed=secrets.randbelow(2**32))


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Keep library noise off the terminal: torchsde's Brownian-interval tolerance warnings, the Oobleck
    VAE's weight_norm deprecation, numpy's __array__ copy notice."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module=r"torchsde(\..*)?")
        warnings.filterwarnings("ignore", message=r".*weight_norm.*", category=FutureWarning)
        warnings.filterwarnings("ignore", message=r".*__array__.*copy", category=DeprecationWarning)
        yield


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


def generate(prepared: Prepared, request: AudioRequest, output: OutputOptions, progress: Progress = Progress(),
             on_output: Callable[[dict], None] = lambda item: None, *,
             fmt: AudioFormat | None = None) -> list[Path]:
    """Load once, render the `num_waveforms_per_prompt` waveforms together, write each with its sidecar."""
    with _quiet():
        return _generate(prepared, request, output, progress, on_output, fmt or output_format(output))


def _generate(prepared, request, output, progress, on_output, fmt) -> list[Path]:
    import numpy as np
    import torch

    spec, plan = prepared.spec, prepared.plan
    if request.seed is None:
        request = with_seed(request)
        progress.note(f"seed {request.seed} (drawn; pass --seed {request.seed} to repeat)")
    folder = hub.ensure_local(spec)
    progress.stage(f"Loading {spec.id} ({plan.dtype} on {plan.device}, offload {plan.offload})")
    pipe = apply(load_diffusers(spec, folder, torch_dtype(plan)), plan)
    pipe.set_progress_bar_config(disable=True)

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
    generators = [torch.Generator(plan.generator_device).manual_seed(s) for s in seeds]
    negative = request.negative_prompt or None  # --negative "" means none
    label = f"audio {length_of(request):g} s" + (f" x{count}" if count > 1 else "")
    with progress.task(label, total=request.num_inference_steps) as advance, torch.inference_mode():
        # Latents out, decoded and cut here: the pipeline cuts at int(seconds * rate), a sample short at times.
        latents = pipe(prompt=request.prompt, negative_prompt=negative,
                       audio_start_in_s=request.audio_start_in_s, audio_end_in_s=request.audio_end_in_s,
                       num_inference_steps=request.num_inference_steps, guidance_scale=request.guidance_scale,
                       num_waveforms_per_prompt=count, generator=generators, output_type="latent",
                       **_step_callback(pipe, advance)).audios
        audio = pipe.vae.decode(latents).sample[:, :, first:first + frames]
        pipe.maybe_free_model_hooks()
    waveforms = audio.float().cpu().numpy()
    if not np.isfinite(waveforms).all():
        raise StablekitError(f"{spec.id} produced invalid samples (NaN or infinity); nothing written",
                             hint="try --dtype float32" if plan.dtype != "float32" else None)

    sampler = type(pipe.scheduler).__name__
    written: list[Path] = []
    for index, (waveform, seed) in enumerate(zip(waveforms, seeds, strict=True)):
        params = {**asdict(request), "seed": seed, "index": index, "scheduler": sampler, "model": spec.id,
                  "sample_rate": sample_rate, "channels": channels, "frames": frames,
                  "format": fmt.container, "subtype": fmt.subtype, "bit_depth": fmt.bit_depth,
                  "normalize": fmt.normalize, "stablekit_version": __version__}
        path = target_path(output, model=spec.id, seed=seed, index=index, count=count, prompt=request.prompt,
                           extension=DEFAULT_EXTENSION)
        tags = {"title": request.prompt, "software": f"stablekit {__version__} ({spec.id})",
                "comment": _json(params)}
        with finish_before_interrupt():
            path, level = write_audio(waveform.T, sample_rate, path, fmt, tags=tags, overwrite=output.overwrite)
            _report_level(progress, path, level, fmt)
            params.update(level.to_dict())
            sidecar = write_sidecar(path, record(spec=spec, model_path=str(folder), parameters=params,
                                                 plan=plan, output=path.name))
            written.append(path)
            on_output({"path": str(path), "seed": seed, "index": index, "model": spec.id, "sidecar": str(sidecar),
                       "sample_rate": sample_rate, "channels": channels, "seconds": frames / sample_rate})
    return written


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
