"""The device plan: a pure fit of a model's memory profile to hardware (real or hypothetical), with reasons.

Candidates are tried in order of speed cost — everything on the device, then VAE slicing, VAE tiling,
smaller decode chunks; then model, group and sequential offload with the same decode switches — and the first
whose estimated peak (memory_plan.estimate) fits the budget wins. When none fits, DoesNotFitError carries the
failing plan (`failed_plan`, fits=False) and its hint says what would fit.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from .errors import DoesNotFitError, UsageError
from .families import family
from .memory_plan import Estimate, Strategy, Workload, estimate
from .registry import ModelSpec

DTYPES = {"float32": "float32", "fp32": "float32", "float16": "float16", "fp16": "float16", "half": "float16",
          "bfloat16": "bfloat16", "bf16": "bfloat16"}
OFFLOADS = ("none", "model", "group", "sequential")
BUDGET_SHARE = {"cuda": 0.90, "mps": 0.65, "cpu": 0.85}  # of free memory, leaving room for the rest
_ALLOWED = {"diffusers": OFFLOADS, "transformers": ("none", "model")}


@dataclass(frozen=True)
class Hardware:
    """What the machine has; `memory_*` is VRAM on CUDA, unified memory on MPS, RAM on CPU. A hypothetical
    device (--dry-run for a GPU this machine lacks) has the memory of --vram and this machine's RAM."""

    accelerator: str  # cuda | mps | cpu
    name: str
    memory_total_gib: float
    memory_free_gib: float
    ram_total_gib: float
    ram_available_gib: float
    compute_capability: tuple[int, int] | None = None
    device_count: int = 0
    cpu_bf16: bool = False  # the CPU computes bfloat16 in hardware (AVX512_BF16, AMX, Arm BF16): cpu_features
    hypothetical: bool = False

    @property
    def supports_bf16(self) -> bool:
        if self.accelerator == "cuda":
            return self.compute_capability is not None and self.compute_capability >= (8, 0)
        return self.accelerator == "cpu"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


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
    load_peak_gib: float = 0.0  # RAM while loading (file dtype -> compute dtype)
    device_weights_gib: float | None = None  # transformers' device_map: the weights accelerate may put on the GPU
    fits: bool = True

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["reasons"] = list(self.reasons)
        return data


def hypothetical(probed: Hardware, device: str | None, vram_gib: float | None,
                 compute_capability: tuple[int, int] | None = None) -> Hardware:
    """The hardware to plan for with --dry-run: `probed`, unless --device names a kind this machine lacks; then
    a device of that kind with --vram GiB (and --compute-capability, 8.0 when not given) beside this RAM."""
    kind = (device or "auto").split(":")[0]
    if kind in ("auto", "cpu") or kind == probed.accelerator:
        return probed
    if kind not in ("cuda", "mps"):
        return probed  # plan() says what is wrong with it
    if vram_gib is None:
        raise UsageError(f"--device {device}: this machine has no {kind.upper()} device; to plan for one, say how "
                         "much memory it has", hint=f"add --vram GB (e.g. --dry-run --device {kind} --vram 8)")
    cc = (compute_capability or (8, 0)) if kind == "cuda" else None
    name = f"hypothetical {'CUDA GPU' if kind == 'cuda' else 'Apple GPU'} ({vram_gib:g} GiB"
    if cc:
        assumed = "" if compute_capability else ", assumed: --compute-capability to change"
        name += f", compute capability {cc[0]}.{cc[1]}{assumed}"
    name += ")"
    return Hardware(kind, name, vram_gib, vram_gib, probed.ram_total_gib, probed.ram_available_gib, cc, 1,
                    probed.cpu_bf16, hypothetical=True)


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
                         hint=f"this machine has: {', '.join(sorted({hardware.accelerator, 'cpu'}))}; "
                              f"--dry-run --device {kind} --vram GB plans for one it lacks")
    if kind == "cuda" and ":" in requested and not hardware.hypothetical:
        index = requested.split(":", 1)[1]
        if not index.isdigit() or int(index) >= max(hardware.device_count, 1):
            raise UsageError(f"--device {requested}: no such GPU", hint=f"this machine has {hardware.device_count}")
    if hardware.hypothetical:
        return requested, f"device {requested}: planned for {hardware.name}, which this machine does not have"
    return requested, f"device {requested}: asked for with --device"


def _choose_dtype(spec: ModelSpec, hardware: Hardware, device: str, requested: str | None) -> tuple[str, str]:
    kind = device.split(":")[0]
    cc = ".".join(map(str, hardware.compute_capability or (0, 0)))
    if requested:
        dtype = normalize_dtype(requested)
        if dtype == "bfloat16" and kind == "cuda" and not hardware.supports_bf16:
            raise UsageError(f"--dtype bfloat16: this GPU (compute capability {cc}) has no bf16",
                             hint="use --dtype float16")
        if dtype == "float16" and kind == "cpu":
            return dtype, "dtype float16: asked for (slow on most CPUs; bfloat16 is faster there)"
        if dtype == "bfloat16" and kind == "cpu" and not hardware.cpu_bf16:
            return dtype, ("dtype bfloat16: asked for with --dtype; this CPU has no bf16 instructions, so torch "
                           "emulates it: half the memory of float32, but far slower (convolutions up to ~100x)")
        return dtype, f"dtype {dtype}: asked for with --dtype"
    if kind == "cpu" and hardware.cpu_bf16:
        return "bfloat16", ("dtype bfloat16: this CPU computes bf16 in hardware (AVX512_BF16/AMX/Arm BF16): half "
                            "the memory of float32, faster matrix multiplications")
    if kind == "cpu":
        return "float32", "dtype float32: CPUs compute half precision slowly or inexactly (bfloat16 halves memory)"
    if kind == "mps":
        return "float16", "dtype float16: the Apple GPU's fast half precision"
    if hardware.supports_bf16:
        return "bfloat16", f"dtype bfloat16: compute capability {cc} has bf16 (fp32 range, no fp16 overflow)"
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
    share = BUDGET_SHARE[kind]
    return free * share, f"{source}, planning with {share:.0%} of it", memory_kind


def _candidates(spec: ModelSpec, work: Workload, kind: str, dtype: str, budget: float,
                offload: str | None) -> list[Strategy]:
    """Every strategy worth trying, cheapest in speed first."""
    allowed = _ALLOWED.get(spec.library, ("none",)) if kind == "cuda" else ("none",)
    offloads = [offload] if offload else list(allowed)
    decodes: list[dict[str, Any]] = [{}]
    if spec.memory.unit == "megapixels" and spec.modality == "image" and "vae" in spec.memory.params:
        # a batch is always decoded one image at a time (VAE slicing: the same work, a fraction of the memory)
        decodes = [{"slicing": work.batch > 1}, {"tiling": True, "slicing": work.batch > 1}]
    elif spec.memory.unit == "megapixel_frames":
        frames = work.frames or 1
        decodes = [{"decode_chunk": c} for c in sorted({frames, *(c for c in (8, 4, 2, 1) if c < frames)},
                                                          reverse=True)]
    found = []
    for level in offloads:
        if level == "model" and spec.library == "transformers":  # accelerate gets what is left beside the work
            probe = estimate(spec, work, dtype, kind, Strategy("model", device_weights=0.0))
            found.append(Strategy("model", device_weights=max(math.floor((budget - probe.peak) * 100) / 100, 0.0)))
        else:
            found += [Strategy(level, **d) for d in decodes]
    return found


def plan(spec: ModelSpec, hardware: Hardware, work: Workload, overrides: Overrides = Overrides()) -> DevicePlan:
    """Choose device, dtype, offload and decode strategy so the model fits; say why for each choice."""
    found, failed, hint = _search(spec, hardware, work, overrides)
    if found is not None:
        return found
    error = DoesNotFitError(failed.reasons[-1].split(": ", 1)[1], hint=hint)
    error.failed_plan = failed  # type: ignore[attr-defined]  # what --dry-run shows (fits: false)
    raise error


def _search(spec, hardware, work, overrides) -> tuple[DevicePlan | None, DevicePlan, str]:
    """(the first candidate that fits or None, the best failing plan, what would fit)."""
    device, device_reason = _choose_device(hardware, overrides.device)
    kind = device.split(":")[0]
    dtype, dtype_reason = _choose_dtype(spec, hardware, device, overrides.dtype)
    if overrides.offload and overrides.offload not in OFFLOADS:
        raise UsageError(f"--offload {overrides.offload}: unknown", hint=f"use one of {', '.join(OFFLOADS)}")
    if overrides.offload not in (None, "none") and kind != "cuda":
        raise UsageError(f"--offload {overrides.offload} needs a CUDA GPU ({kind} keeps everything in one memory)",
                         hint="drop --offload, or use --offload none")
    allowed = _ALLOWED.get(spec.library, ("none",))
    if overrides.offload and overrides.offload not in allowed:
        raise UsageError(f"--offload {overrides.offload}: {spec.id} supports {', '.join(allowed)}")
    budget, budget_reason, memory_kind = _budget(hardware, kind, overrides.vram_gib)
    ram_budget = hardware.ram_available_gib * BUDGET_SHARE["cpu"]
    check_ram = kind != "cpu" and not hardware.hypothetical
    reasons = [device_reason, dtype_reason, budget_reason]
    tried: list[tuple[Strategy, Estimate]] = []
    for cand in _candidates(spec, work, kind, dtype, budget, overrides.offload):
        est = estimate(spec, work, dtype, kind, cand)
        fits_device = est.peak <= budget and (cand.device_weights is None or cand.device_weights > 0)
        if fits_device and (not check_ram or est.host <= ram_budget):
            return _make_plan(spec, work, device, dtype, cand, est, budget, memory_kind, reasons, tried), None, ""
        tried.append((cand, est))
    best, best_est = min(tried, key=lambda item: item[1].peak)
    if best_est.peak <= budget and check_ram:
        why = (f"{spec.id} does not fit: offloading keeps {best_est.host:.1f} GiB of weights in RAM, "
               f"{ram_budget:.1f} GiB available")
    else:
        digits = 2 if round(best_est.peak, 1) == round(budget, 1) else 1
        why = (f"{spec.id} does not fit: {best_est.peak:.{digits}f} GiB needed at {work.describe()} with "
               f"{best.label}, {budget:.{digits}f} GiB of {memory_kind} to plan with")
    failed = _make_plan(spec, work, device, dtype, best, best_est, budget, memory_kind, reasons, tried[:-1])
    failed = replace(failed, fits=False, reasons=(*failed.reasons, f"does not fit: {why}"))
    return None, failed, _would_fit(spec, hardware, work, overrides, dtype, kind, best_est.peak)


def _make_plan(spec, work, device, dtype, cand: Strategy, est: Estimate, budget, memory_kind, reasons, tried):
    reasons = list(reasons)
    reasons.append(
        f"memory: weights {est.weights:.1f} GiB, at the peak ({est.phase}) {est.resident:.1f} GiB of them on the "
        f"device + {est.work:.1f} GiB of work at {work.describe()} -> peak {est.peak:.1f} GiB of {memory_kind} "
        f"with {cand.label} (budget {budget:.1f} GiB)")
    if est.load > est.generate and device == "cpu":
        reasons.append(f"loading peaks at {est.load:.1f} GiB: weights are converted from the files' "
                       f"{spec.memory.file_bits}-bit dtype one component at a time")
    if tried:
        first, first_est = tried[0]
        reasons.append(f"not {first.label}: it would peak at {first_est.peak:.1f} GiB > {budget:.1f} GiB")
    if cand.offload != "none":
        what = (f"accelerate's device_map may put {cand.device_weights:.1f} GiB of the weights on the GPU, the rest "
                "stays in RAM" if cand.device_weights is not None else
                {"model": "one component on the GPU at a time", "group": "blocks streamed to the GPU as needed",
                 "sequential": "layers moved to the GPU one by one (slowest)"}[cand.offload])
        reasons.append(f"offload {cand.offload}: {what}; {est.host:.1f} GiB of weights kept in RAM")
    chunk = cand.decode_chunk if cand.decode_chunk and cand.decode_chunk < (work.frames or 1) else None
    if chunk:
        reasons.append(f"video: decode {chunk} frames at a time and chunk the UNet's feed-forward layers")
    if spec.library == "diffusers":
        reasons.append("noise from a CPU generator: the same seed gives the same output on any device")
    return DevicePlan(
        device=device, dtype=dtype, offload=cand.offload, vae_tiling=cand.tiling, vae_slicing=cand.slicing,
        attention_slicing=cand.offload == "sequential", forward_chunking=chunk is not None,
        decode_chunk_size=cand.decode_chunk, peak_gib=round(est.peak, 2), budget_gib=round(budget, 2),
        weights_gib=round(est.weights, 2), memory_kind=memory_kind, reasons=tuple(reasons),
        load_peak_gib=round(est.load, 2), device_weights_gib=cand.device_weights,
    )


def _would_fit(spec, hardware, work, overrides, dtype, kind, needed) -> str:
    hints = []
    if overrides.offload:
        hints.append("drop --offload to let stablekit choose")
    if work.width and work.height and spec.memory.unit in ("megapixels", "megapixel_frames"):
        smaller = _largest_size_that_fits(spec, hardware, work, overrides)
        if smaller:
            hints.append(f"a smaller size fits: --width {smaller[0]} --height {smaller[1]}")
    if work.frames and spec.memory.unit == "megapixel_frames" and work.frames > 2:
        hints.append("fewer --frames")
    if work.batch > 1:
        hints.append("a smaller --batch-size")
    if dtype == "float32":  # only where half precision would really fit (not when the size is the problem)
        half = _half_precision_that_fits(spec, hardware, work, overrides)
        if half:
            hints.append(f"--dtype {half} fits (half the memory of float32)")
    hints.append(f"a device with {needed / BUDGET_SHARE[kind]:.0f} GiB free")
    hints.append("another model (see `stablekit models list`), or --vram GB if more memory is free than detected")
    return "; ".join(hints)


def _half_precision_that_fits(spec, hardware, work, overrides) -> str | None:
    """A 16-bit dtype this device computes in which the job fits at the asked size, if any."""
    for half in ("bfloat16", "float16"):
        try:
            found, _, _ = _search_quiet(spec, hardware, work, replace(overrides, dtype=half))
        except UsageError:  # a GPU without bf16
            continue
        if found:
            return half
    return None


def _largest_size_that_fits(spec, hardware, work, overrides) -> tuple[int, int] | None:
    multiple = int(spec.limits.get("size_multiple", 8))
    for shrink in (0.75, 0.5, 0.375, 0.25):
        width = max(multiple, int(work.width * shrink) // multiple * multiple)
        height = max(multiple, int(work.height * shrink) // multiple * multiple)
        found, _, _ = _search_quiet(spec, hardware, replace(work, width=width, height=height), overrides)
        if found:
            return width, height
    return None


def _search_quiet(spec, hardware, work, overrides):
    """_search without the hint (which would search smaller sizes again)."""
    device, _ = _choose_device(hardware, overrides.device)
    kind = device.split(":")[0]
    dtype, _ = _choose_dtype(spec, hardware, device, overrides.dtype)
    budget, _, _ = _budget(hardware, kind, overrides.vram_gib)
    ram_budget = hardware.ram_available_gib * BUDGET_SHARE["cpu"]
    check_ram = kind != "cpu" and not hardware.hypothetical
    for cand in _candidates(spec, work, kind, dtype, budget, overrides.offload):
        est = estimate(spec, work, dtype, kind, cand)
        if est.peak <= budget and (cand.device_weights is None or cand.device_weights > 0) and (
                not check_ram or est.host <= ram_budget):
            return cand, est, None
    return None, None, None


def default_workload(spec: ModelSpec, **changes: Any) -> Workload:
    """The workload of a plain run with the model's defaults, with any field changed."""
    d = spec.defaults
    base = Workload(width=d.get("width"), height=d.get("height"), frames=d.get("num_frames"),
                    seconds=d.get("audio_end_in_s"),
                    tokens=spec.limits.get("context_length") if spec.modality == "text" else None,
                    guided=float(d.get("guidance_scale", d.get("max_guidance_scale", 7.0)) or 0) > 1)
    return replace(base, **{k: v for k, v in changes.items() if v is not None})
