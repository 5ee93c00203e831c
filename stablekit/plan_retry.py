"""Out of memory at run time: recognise it, and the next stronger plan to try once (the planner's own order:
a smaller decode chunk, then VAE tiling, then more offload), and the plan summary a batch record carries."""

from __future__ import annotations

import sys
from dataclasses import replace
from typing import Any

from .devices import OFFLOADS, DevicePlan
from .errors import StablekitError
from .planning import Plan

_OFFLOADS_BY_LIBRARY = {"diffusers": OFFLOADS, "transformers": ("none", "model")}


class OutOfMemory(StablekitError):
    """A job ran out of memory, and again with the stronger plan (or there was none)."""

    @classmethod
    def after(cls, plan: Plan, change: str | None) -> OutOfMemory:
        p = plan.device_plan
        where = f"{p.device} ({p.memory_kind}, planned ~{p.peak_gib:.1f} of {p.budget_gib:.1f} GiB)"
        if change is None:
            return cls(f"out of memory on {where}, and no stronger plan is left to try",
                       hint="a smaller size, fewer frames or a lighter --dtype; or free memory and rerun")
        return cls(f"out of memory on {where}, also with {change}",
                   hint="a smaller size, fewer frames or a lighter --dtype; or free memory and rerun")


def is_out_of_memory(err: BaseException) -> bool:
    """torch's OutOfMemoryError (CUDA), MPS's and CPU allocators' RuntimeErrors, Python's MemoryError."""
    torch = sys.modules.get("torch")
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, MemoryError):
            return True
        if torch is not None and isinstance(err, getattr(torch, "OutOfMemoryError", ())):
            return True
        text = str(err).lower()
        if isinstance(err, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text):
            return True
        err = err.__cause__ or err.__context__
    return False


def stronger_device_plan(plan: Plan) -> tuple[DevicePlan, str] | None:
    """The next stronger choice for one plan, or None when it already uses the strongest."""
    p, spec, work = plan.device_plan, plan.memory_spec, plan.workload
    if spec.memory.unit == "megapixel_frames":
        chunk = getattr(plan.request, "decode_chunk_size", None) or p.decode_chunk_size or work.frames or 1
        if chunk > 1:
            smaller = chunk // 2
            return (replace(p, decode_chunk_size=smaller, forward_chunking=True,
                            reasons=(*p.reasons, f"retry: decode {smaller} frames at a time")),
                    f"decode chunks of {smaller} frames")
    if spec.modality == "image" and "vae" in spec.memory.params and not p.vae_tiling:
        return (replace(p, vae_tiling=True, vae_slicing=p.vae_slicing or work.batch > 1,
                        reasons=(*p.reasons, "retry: VAE tiling")), "VAE tiling")
    order = _OFFLOADS_BY_LIBRARY.get(spec.library, ("none",))
    if p.device.startswith("cuda") and p.offload in order and order.index(p.offload) + 1 < len(order):
        offload = order[order.index(p.offload) + 1]
        return (replace(p, offload=offload, attention_slicing=offload == "sequential",
                        reasons=(*p.reasons, f"retry: {offload} offload")), f"{offload} offload")
    return None


def stronger_plan(plan: Plan) -> tuple[Plan, str] | None:
    """The job's plan with every part (its stages too) one step stronger where it can be, and what changed;
    None when no part can be."""
    changes: list[str] = []
    stages = []
    for stage in plan.stages:
        found = stronger_plan(stage)
        if found:
            stage, change = found
            changes.append(change)
        stages.append(stage)
    found = stronger_device_plan(plan)
    job = plan.job
    if found:
        device_plan, change = found
        changes.append(change)
        if getattr(plan.request, "decode_chunk_size", None) is not None:  # the request's chunk wins at run time
            job = job.with_request(decode_chunk_size=device_plan.decode_chunk_size)
    else:
        device_plan = plan.device_plan
    if not changes:
        return None
    return replace(plan, job=job, device_plan=device_plan, stages=tuple(stages)), " and ".join(changes)


def plan_summary(plan: Plan | None, retry: str | None = None) -> dict[str, Any] | None:
    """What a batch record says of the plan a job ran with (its stages' too)."""
    if plan is None:
        return None
    p = plan.device_plan
    summary: dict[str, Any] = {"model": plan.spec.id, "device": p.device, "dtype": p.dtype, "offload": p.offload,
                               "vae_tiling": p.vae_tiling, "vae_slicing": p.vae_slicing,
                               "decode_chunk_size": p.decode_chunk_size, "peak_gib": p.peak_gib,
                               "budget_gib": p.budget_gib}
    if plan.stages:
        summary["stages"] = [plan_summary(stage) for stage in plan.stages]
    if retry:
        summary["retry"] = retry
    return summary
