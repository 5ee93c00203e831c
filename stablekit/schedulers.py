"""Scheduler (sampler) names a user can pass to --scheduler, and how each maps onto diffusers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .errors import UsageError

_FLOW_FAMILIES = ("sd3",)


@dataclass(frozen=True)
class Sampler:
    cls: str  # diffusers scheduler class
    a1111: str  # the name AUTOMATIC1111-style image browsers show
    options: dict[str, Any] = field(default_factory=dict)
    flow: bool = False  # flow-matching (SD3) rather than noise-prediction (SD 1.x/2.x/XL)


SAMPLERS: dict[str, Sampler] = {
    "euler": Sampler("EulerDiscreteScheduler", "Euler"),
    "euler-trailing": Sampler("EulerDiscreteScheduler", "Euler", {"timestep_spacing": "trailing"}),
    "euler-ancestral": Sampler("EulerAncestralDiscreteScheduler", "Euler a"),
    "euler-ancestral-trailing": Sampler("EulerAncestralDiscreteScheduler", "Euler a", {"timestep_spacing": "trailing"}),
    "heun": Sampler("HeunDiscreteScheduler", "Heun"),
    "lms": Sampler("LMSDiscreteScheduler", "LMS"),
    "ddim": Sampler("DDIMScheduler", "DDIM"),
    "ddim-trailing": Sampler("DDIMScheduler", "DDIM", {"timestep_spacing": "trailing"}),
    "pndm": Sampler("PNDMScheduler", "PLMS"),
    "dpm++2m": Sampler("DPMSolverMultistepScheduler", "DPM++ 2M"),
    "dpm++2m-karras": Sampler("DPMSolverMultistepScheduler", "DPM++ 2M Karras", {"use_karras_sigmas": True}),
    "dpm++2m-sde-karras": Sampler("DPMSolverMultistepScheduler", "DPM++ 2M SDE Karras",
                                  {"use_karras_sigmas": True, "algorithm_type": "sde-dpmsolver++"}),
    "unipc": Sampler("UniPCMultistepScheduler", "UniPC"),
    "flow-euler": Sampler("FlowMatchEulerDiscreteScheduler", "Euler", flow=True),
    "flow-heun": Sampler("FlowMatchHeunDiscreteScheduler", "Heun", flow=True),
}


def check(name: str | None, family: str) -> None:
    """Reject unknown names and samplers of the other kind (flow matching is SD3's alone)."""
    if name is None:
        return
    sampler = SAMPLERS.get(name)
    if sampler is None:
        raise UsageError(f"--scheduler {name}: unknown", hint=f"use one of {', '.join(SAMPLERS)}")
    wants_flow = family in _FLOW_FAMILIES
    if sampler.flow != wants_flow:
        usable = [n for n, s in SAMPLERS.items() if s.flow == wants_flow]
        raise UsageError(f"--scheduler {name} does not work with {family} models", hint=f"use {', '.join(usable)}")


def apply(pipe, name: str | None) -> str:
    """Swap the pipeline's scheduler for the named one (same training config); returns the A1111 name."""
    if name is None:
        return type(pipe.scheduler).__name__.replace("DiscreteScheduler", "").replace("Scheduler", "")
    import diffusers

    sampler = SAMPLERS[name]
    pipe.scheduler = getattr(diffusers, sampler.cls).from_config(pipe.scheduler.config, **sampler.options)
    return sampler.a1111
