"""The device manager: probe() the hardware, plan() a pure fit of a model to it, place() a pipeline as planned.

plan() is a pure function of the model's memory profile, the hardware and the request, so it can be tested
as a table of fake hardware; it carries the reason for every choice, and every choice can be overridden.
place() is the only code that calls diffusers' offload / tiling / slicing APIs.
"""

from __future__ import annotations

import math
import sys
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from .errors import DoesNotFitError, UsageError
from .families import family
from .registry import ModelSpec

GIB = 1024**3
DTYPES = {"float32": "float32", "fp32": "float32", "float16": "float16", "fp16": "float16", "half": "float16",
          "bfloat16": "bfloat16", "bf16": "bfloat16"}
OFFLOADS = ("none", "model", "group", "sequential")
_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}
_BUDGET_SHARE = {"cuda": 0.90, "mps": 0.65, "cpu": 0.85}  # of free memory, leaving room for the rest
_RUNTIME_GIB = {"cuda": 0.3, "mps": 0.3, "cpu": 0.0}  # allocator slack and workspaces on accelerators
_RESIDENT_SHARE = {"group": 0.10, "sequential": 0.03}  # of the largest component kept on the device
_TILE_MEGAPIXELS = 0.26  # diffusers' VAE tiles are 512x512


@dataclass(frozen=True)
class Hardware:
    """What the machine has; `memory_*` is VRAM on CUDA, unified memory on MPS, RAM on CPU."""

    accelerator: str  # cuda | mps | cpu
    name: str
    memory_total_gib: float
    memory_free_gib: float
    ram_total_gib: float
    ram_available_gib: float
    compute_capability: tuple[int, int] | None = None
    device_count: int = 0

    @property
    def supports_bf16(self) -> bool:
        if self.accelerator == "cuda":
            return self.compute_capability is not None and self.compute_capability >= (8, 0)
        return self.accelerator == "cpu"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Workload:
    """How big the job is: what activations and decode memory scale with."""

    width: int | None = None
    height: int | None = None
    batch: int = 1
    frames: int | None = None
    seconds: float | None = None
    tokens: int | None = None

    def describe(self) -> str:
        parts = []
        if self.width and self.height:
            parts.append(f"{self.width}x{self.height}")
        if self.frames:
            parts.append(f"{self.frames} frames")
        if self.seconds:
            parts.append(f"{self.seconds:g} s")
        if self.tokens:
            parts.append(f"{self.tokens} tokens")
        if self.batch > 1:
            parts.append(f"batch {self.batch}")
        return ", ".join(parts) or "default size"


@dataclass(frozen=True)
class Overrides:
    """The user's flags: --device, --dtype, --offload, --vram."""

    device: str | None = None
    dtype: str | None = None
    offload: str | None = None
    vram_gib: float | None = None


@dataclass(frozen=True)
class DevicePlan:
    device: str
    dtype: str
    offload: str
    vae_tiling: bool
    vae_slicing: bool
    attention_slicing: bool
    forward_chunking: bool
    decode_chunk_size: int | None
    peak_gib: float
    budget_gib: float
    weights_gib: float
    memory_kind: str
    generator_device: str = "cpu"
    reasons: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["reasons"] = list(self.reasons)
        return data


@dataclass(frozen=True)
class _Candidate:
    offload: str
    tiling: bool = False
    slicing: bool = False
    decode_chunk: int | None = None

    @property
    def label(self) -> str:
        extras = [name for name, on in (("VAE tiling", self.tiling), ("VAE slicing", self.slicing)) if on]
        if self.decode_chunk:
            extras.append(f"decode chunks of {self.decode_chunk}")
        offload = "everything on the device" if self.offload == "none" else f"{self.offload} offload"
        return ", ".join([offload, *extras])


def normalize_dtype(name: str) -> str:
    try:
        return DTYPES[name.lower()]
    except KeyError:
        raise UsageError(f"--dtype {name}: unknown dtype", hint="use float32, float16 or bfloat16") from None


def _choose_device(hardware: Hardware, requested: str | None) -> tuple[str, str]:
    if requested in (None, "auto"):
        kind = hardware.accelerator
        why = {"cuda": f"CUDA GPU {hardware.name}", "mps": f"Apple GPU {hardware.name} (MPS)",
               "cpu": "no CUDA or MPS device found"}[kind]
        return kind, f"device {kind}: {why}"
    kind = requested.split(":")[0]
    if kind not in ("cuda", "mps", "cpu"):
        raise UsageError(f"--device {requested}: unknown device", hint="use auto, cuda, cuda:N, mps or cpu")
    if kind != "cpu" and kind != hardware.accelerator:
        raise UsageError(f"--device {requested}: no {kind.upper()} device on this machine",
                         hint=f"this machine has: {', '.join(sorted({hardware.accelerator, 'cpu'}))}")
    if kind == "cuda" and ":" in requested:
        index = requested.split(":", 1)[1]
        if not index.isdigit() or int(index) >= max(hardware.device_count, 1):
            raise UsageError(f"--device {requested}: no such GPU", hint=f"this machine has {hardware.device_count}")
    return requested, f"device {requested}: asked for with --device"


def _choose_dtype(spec: ModelSpec, hardware: Hardware, device: str, requested: str | None) -> tuple[str, str]:
    kind = device.split(":")[0]
    if requested:
        dtype = normalize_dtype(requested)
        if dtype == "bfloat16" and kind == "cuda" and not hardware.supports_bf16:
            cc = ".".join(map(str, hardware.compute_capability or (0, 0)))
            raise UsageError(f"--dtype bfloat16: this GPU (compute capability {cc}) has no bf16",
                             hint="use --dtype float16")
        if dtype == "float16" and kind == "cpu":
            return dtype, "dtype float16: asked for (slow on most CPUs; bfloat16 is faster there)"
        return dtype, f"dtype {dtype}: asked for with --dtype"
    if kind == "cpu":
        return "float32", "dtype float32: CPUs compute half precision slowly or inexactly (bfloat16 halves memory)"
    if kind == "mps":
        return "float16", "dtype float16: the Apple GPU's fast half precision"
    if hardware.supports_bf16:
        cc = ".".join(map(str, hardware.compute_capability or (0, 0)))
        return "bfloat16", f"dtype bfloat16: compute capability {cc} has bf16 (fp32 range, no fp16 overflow)"
    cc = ".".join(map(str, hardware.compute_capability or (0, 0)))
    note = " (the VAE is upcast for decoding)" if family(spec.family).fp16_vae else ""
    return "float16", f"dtype float16: compute capability {cc} has no bf16{note}"


def _budget(hardware: Hardware, kind: str, vram_gib: float | None) -> tuple[float, str, str]:
    memory_kind = {"cuda": "VRAM", "mps": "unified memory", "cpu": "RAM"}[kind]
    if vram_gib is not None:
        if vram_gib <= 0:
            raise UsageError(f"--vram {vram_gib:g}: must be a positive number of GiB")
        free, source = vram_gib, f"{vram_gib:g} GiB given with --vram"
    elif kind == "cpu":
        free, source = hardware.ram_available_gib, f"{hardware.ram_available_gib:.1f} GiB of RAM available"
    elif kind == "mps":
        free, source = hardware.memory_total_gib, f"{hardware.memory_total_gib:.1f} GiB unified memory"
    else:
        free, source = hardware.memory_free_gib, (
            f"{hardware.memory_free_gib:.1f} GiB free of {hardware.memory_total_gib:.1f} GiB")
    share = _BUDGET_SHARE[kind]
    return free * share, f"{source}, planning with {share:.0%} of it", memory_kind


def _units(spec: ModelSpec, work: Workload, decode_chunk: int | None = None) -> tuple[float, float]:
    """(activation units, decode units) of the workload in the model's memory unit."""
    unit = spec.memory.unit
    megapixels = (work.width or 0) * (work.height or 0) / 1e6
    if unit == "megapixels":
        return megapixels * work.batch, megapixels * work.batch
    if unit == "megapixel_frames":
        frames = work.frames or 1
        return megapixels * frames * work.batch, megapixels * (decode_chunk or frames)
    if unit == "seconds":
        return (work.seconds or 1.0) * work.batch, (work.seconds or 1.0) * work.batch
    if unit == "kilotokens":
        return (work.tokens or 1024) / 1000, 0.0
    return 1.0, 1.0


def _roles(spec: ModelSpec) -> tuple[list[str], list[str], list[str]]:
    """Split components into denoisers (run every step), decoders and the rest (encoders)."""
    names = list(spec.memory.params)
    denoisers = [n for n in names if n in ("unet", "transformer", "model")]
    decoders = [n for n in names if n == "vae"]
    return denoisers, decoders, [n for n in names if n not in denoisers + decoders]


def _weights(spec: ModelSpec, dtype: str) -> dict[str, float]:
    return {name: millions * 1e6 * _BYTES[dtype] / GIB for name, millions in spec.memory.params.items()}


def _peak(spec: ModelSpec, work: Workload, dtype: str, kind: str, cand: _Candidate) -> tuple[float, float, float]:
    """(peak GiB on the device, activations GiB, decode GiB) for one candidate configuration."""
    scale = _BYTES[dtype] / 2
    weights = _weights(spec, dtype)
    act_units, decode_units = _units(spec, work, cand.decode_chunk)
    act = spec.memory.activation_gib * act_units * scale
    if cand.decode_chunk and cand.decode_chunk < (work.frames or 1):
        act *= 0.5  # forward chunking of the temporal layers
    if cand.slicing:
        decode_units /= max(work.batch, 1)
    if cand.tiling:
        decode_units = min(decode_units, _TILE_MEGAPIXELS)
    decode = spec.memory.decode_gib * decode_units * scale
    runtime = _RUNTIME_GIB[kind]
    denoisers, decoders, encoders = _roles(spec)
    largest = max(weights.values())
    if cand.offload == "none":
        peak = sum(weights.values()) + max(act, decode)
    elif cand.offload == "model":
        if spec.modality == "text":  # accelerate's device_map: layers spread over GPU and CPU
            peak = _RESIDENT_SHARE["group"] * largest + act
        else:
            phases = [sum(weights[n] for n in denoisers) + act, sum(weights[n] for n in decoders) + decode]
            phases += [weights[n] for n in encoders]
            peak = max(phases)
    else:
        resident = _RESIDENT_SHARE[cand.offload] * largest
        peak = resident + max(act * (0.7 if cand.offload == "sequential" else 1.0), decode)
    return peak + runtime, act, decode


def _candidates(spec: ModelSpec, work: Workload, kind: str, offload: str | None) -> list[_Candidate]:
    if offload:
        offloads = [offload]
    elif kind == "cuda" and spec.library == "diffusers":
        offloads = list(OFFLOADS)
    elif kind == "cuda" and spec.library == "transformers":
        offloads = ["none", "model"]  # accelerate's device_map
    else:
        offloads = ["none"]
    decodes: list[dict[str, Any]] = [{}]
    if spec.memory.unit == "megapixels" and spec.memory.decode_gib and spec.modality == "image":
        decodes += ([{"slicing": True}] if work.batch > 1 else []) + [{"tiling": True, "slicing": work.batch > 1}]
    elif spec.memory.unit == "megapixel_frames":
        frames = work.frames or 1
        chunks = sorted({c for c in (8, 4, 2, 1) if c < frames}, reverse=True)
        decodes = [{"decode_chunk": frames}] + [{"decode_chunk": c} for c in chunks]
    return [_Candidate(offload=o, **d) for o in offloads for d in decodes]


def plan(spec: ModelSpec, hardware: Hardware, work: Workload, overrides: Overrides = Overrides()) -> DevicePlan:
    """Choose device, dtype, offload and decode strategy so the model fits; say why for each choice."""
    found, failure = _search(spec, hardware, work, overrides)
    if found is None:
        raise _does_not_fit(spec, hardware, work, overrides, failure)
    return found


@dataclass(frozen=True)
class _Failure:
    device: str
    dtype: str
    budget: float
    memory_kind: str
    weights: float
    ram_budget: float
    tried: tuple[tuple[_Candidate, float], ...]


def _search(spec, hardware, work, overrides) -> tuple[DevicePlan | None, _Failure]:
    """The first candidate, fastest first, whose estimated peak fits the budget."""
    device, device_reason = _choose_device(hardware, overrides.device)
    kind = device.split(":")[0]
    dtype, dtype_reason = _choose_dtype(spec, hardware, device, overrides.dtype)
    if overrides.offload and overrides.offload not in OFFLOADS:
        raise UsageError(f"--offload {overrides.offload}: unknown", hint=f"use one of {', '.join(OFFLOADS)}")
    if overrides.offload not in (None, "none") and kind != "cuda":
        raise UsageError(f"--offload {overrides.offload} needs a CUDA GPU ({kind} keeps everything in one memory)",
                         hint="drop --offload, or use --offload none")
    allowed = {"diffusers": OFFLOADS, "transformers": ("none", "model")}.get(spec.library, ("none",))
    if overrides.offload and overrides.offload not in allowed:
        raise UsageError(f"--offload {overrides.offload}: {spec.id} supports {', '.join(allowed)}")
    budget, budget_reason, memory_kind = _budget(hardware, kind, overrides.vram_gib)
    weights = sum(_weights(spec, dtype).values())
    ram_budget = hardware.ram_available_gib * _BUDGET_SHARE["cpu"]
    tried: list[tuple[_Candidate, float]] = []
    for cand in _candidates(spec, work, kind, overrides.offload):
        peak, act, decode = _peak(spec, work, dtype, kind, cand)
        offloaded_ok = cand.offload == "none" or weights <= ram_budget
        if peak <= budget and offloaded_ok:
            found = _make_plan(spec, work, device, dtype, cand, peak, budget, weights, memory_kind,
                               [device_reason, dtype_reason, budget_reason], tried, act, decode)
            return found, _Failure(device, dtype, budget, memory_kind, weights, ram_budget, tuple(tried))
        tried.append((cand, peak))
    return None, _Failure(device, dtype, budget, memory_kind, weights, ram_budget, tuple(tried))


def _make_plan(spec, work, device, dtype, cand, peak, budget, weights, memory_kind, reasons, tried, act, decode):
    reasons = list(reasons)
    reasons.append(
        f"memory: weights {weights:.1f} GiB, activations {act:.1f} GiB, decode {decode:.1f} GiB at "
        f"{work.describe()} -> peak {peak:.1f} GiB of {memory_kind} with {cand.label} (budget {budget:.1f} GiB)"
    )
    if tried:
        first, first_peak = tried[0]
        reasons.append(f"not {first.label}: it would peak at {first_peak:.1f} GiB > {budget:.1f} GiB")
    if cand.offload != "none":
        what = ("weights split between GPU and CPU by accelerate's device_map" if spec.modality == "text" else
                {"model": "one component on the GPU at a time", "group": "blocks streamed to the GPU as needed",
                 "sequential": "layers moved to the GPU one by one (slowest)"}[cand.offload])
        reasons.append(f"offload {cand.offload}: {what}")
    chunk = cand.decode_chunk if cand.decode_chunk and cand.decode_chunk < (work.frames or 1) else None
    if chunk:
        reasons.append(f"video: decode {chunk} frames at a time and chunk the UNet's feed-forward layers")
    if spec.library == "diffusers":
        reasons.append("noise from a CPU generator: the same seed gives the same output on any device")
    return DevicePlan(
        device=device, dtype=dtype, offload=cand.offload, vae_tiling=cand.tiling, vae_slicing=cand.slicing,
        attention_slicing=cand.offload == "sequential", forward_chunking=chunk is not None,
        decode_chunk_size=cand.decode_chunk, peak_gib=round(peak, 2), budget_gib=round(budget, 2),
        weights_gib=round(weights, 2), memory_kind=memory_kind, reasons=tuple(reasons),
    )


def _does_not_fit(spec, hardware, work, overrides, failure: _Failure) -> DoesNotFitError:
    best_cand, best_peak = min(failure.tried, key=lambda item: item[1])
    message = (f"{spec.id} does not fit: {best_peak:.1f} GiB needed at {work.describe()} with {best_cand.label}, "
               f"{failure.budget:.1f} GiB of {failure.memory_kind} to plan with")
    if best_peak <= failure.budget and failure.weights > failure.ram_budget:
        message = (f"{spec.id} does not fit: offloading keeps {failure.weights:.1f} GiB of weights in RAM, "
                   f"{failure.ram_budget:.1f} GiB available")
    hints = []
    if overrides.offload:
        hints.append("drop --offload to let stablekit choose")
    if work.width and work.height and spec.memory.unit in ("megapixels", "megapixel_frames"):
        smaller = _largest_size_that_fits(spec, hardware, work, overrides)
        if smaller:
            hints.append(f"a smaller size fits: --width {smaller[0]} --height {smaller[1]}")
    if work.frames and spec.memory.unit == "megapixel_frames" and work.frames > 2:
        hints.append("fewer --frames")
    if failure.dtype == "float32":
        hints.append("--dtype bfloat16 halves the weights")
    hints.append("another model (see `stablekit models list`), or --vram GB if more memory is free than detected")
    return DoesNotFitError(message, hint="; ".join(hints))


def _largest_size_that_fits(spec, hardware, work, overrides) -> tuple[int, int] | None:
    multiple = int(spec.limits.get("size_multiple", 8))
    for shrink in (0.75, 0.5, 0.375, 0.25):
        width = max(multiple, int(work.width * shrink) // multiple * multiple)
        height = max(multiple, int(work.height * shrink) // multiple * multiple)
        found, _ = _search(spec, hardware, replace(work, width=width, height=height), overrides)
        if found:
            return width, height
    return None



def default_workload(spec: ModelSpec, **changes: Any) -> Workload:
    """The workload of a plain run with the model's defaults, with any field changed."""
    d = spec.defaults
    base = Workload(width=d.get("width"), height=d.get("height"), frames=d.get("num_frames"),
                    seconds=d.get("audio_end_in_s"),
                    tokens=spec.limits.get("context_length") if spec.modality == "text" else None)
    return replace(base, **{k: v for k, v in changes.items() if v is not None})


def probe(device: str | None = None) -> Hardware:
    """Read the machine: a CUDA GPU (the one `device` names as cuda:N, else the first; free memory now), else
    MPS, else CPU; and system RAM. A cuda:N beyond the GPUs present reads GPU 0 and lets plan() refuse it."""
    import psutil
    import torch

    memory = psutil.virtual_memory()
    ram_total, ram_free = memory.total / GIB, memory.available / GIB
    if torch.cuda.is_available():
        count = torch.cuda.device_count()
        index = _gpu_index(device)
        index = index if index is not None and index < count else 0
        free, total = torch.cuda.mem_get_info(index)
        name = torch.cuda.get_device_name(index)
        if count > 1:
            name = f"{name} (GPU {index} of {count})"
        return Hardware("cuda", name, round(total / GIB, 2), round(free / GIB, 2), round(ram_total, 2),
                        round(ram_free, 2), tuple(torch.cuda.get_device_capability(index)), count)
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return Hardware("mps", "Apple silicon", round(ram_total, 2), round(ram_free, 2), round(ram_total, 2),
                        round(ram_free, 2), None, 1)
    import platform

    name = platform.processor() or platform.machine()
    return Hardware("cpu", f"{name} ({psutil.cpu_count()} cores)", round(ram_total, 2), round(ram_free, 2),
                    round(ram_total, 2), round(ram_free, 2), None, 0)


def _gpu_index(device: str | None) -> int | None:
    """N of "cuda:N" (None for anything else; plan() says what is wrong with a bad one)."""
    if device and device.startswith("cuda:") and device[5:].isdigit():
        return int(device[5:])
    return None


def torch_dtype(plan_: DevicePlan):
    import torch

    return getattr(torch, plan_.dtype)


def place(pipe, plan_: DevicePlan):
    """Place a loaded diffusers pipeline as planned: the only caller of offload, tiling and slicing APIs."""
    import torch

    if plan_.offload == "none":
        pipe.to(plan_.device)
    elif plan_.offload == "model":
        pipe.enable_model_cpu_offload(device=plan_.device)
    elif plan_.offload == "group":
        pipe.enable_group_offload(onload_device=torch.device(plan_.device), offload_device=torch.device("cpu"),
                                  offload_type="block_level", num_blocks_per_group=1, use_stream=True)
    else:
        pipe.enable_sequential_cpu_offload(device=plan_.device)
    vae = getattr(pipe, "vae", None)
    if plan_.vae_tiling and hasattr(vae, "enable_tiling"):
        vae.enable_tiling()
    if plan_.vae_slicing and hasattr(vae, "enable_slicing"):
        vae.enable_slicing()
    if plan_.attention_slicing and hasattr(pipe, "enable_attention_slicing"):
        pipe.enable_attention_slicing()
    unet = getattr(pipe, "unet", None)
    if plan_.forward_chunking and hasattr(unet, "enable_forward_chunking"):
        unet.enable_forward_chunking()
    return pipe


def transformers_load_kwargs(plan_: DevicePlan) -> dict[str, Any]:
    """from_pretrained arguments for a transformers model: where the weights go is decided at load time."""
    if plan_.offload == "none":
        return {}
    device = plan_.device if ":" in plan_.device else f"{plan_.device}:0"
    gpu_index = int(device.split(":")[1])
    budget = f"{math.floor(plan_.budget_gib * 1024)}MiB"
    return {"device_map": "auto", "max_memory": {gpu_index: budget, "cpu": "1024GiB"}}


def free_memory(device: str) -> None:
    """Give memory back after a model is released: Python's garbage, then the accelerator's cache."""
    import gc

    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and device.startswith("cuda"):
        torch.cuda.empty_cache()
    elif torch is not None and device == "mps":
        torch.mps.empty_cache()
