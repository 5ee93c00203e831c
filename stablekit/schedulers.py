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


# diffusers scheduler class -> the sampler name AUTOMATIC1111 writes for the same method.
_A1111_BY_CLASS = {
    "EulerDiscreteScheduler": "Euler",
    "EulerAncestralDiscreteScheduler": "Euler a",
    "HeunDiscreteScheduler": "Heun",
    "LMSDiscreteScheduler": "LMS",
    "DDIMScheduler": "DDIM",
    "PNDMScheduler": "PLMS",
    "DPMSolverMultistepScheduler": "DPM++ 2M",
    "DPMSolverSinglestepScheduler": "DPM++ SDE",
    "DPMSolverSDEScheduler": "DPM++ SDE",
    "KDPM2DiscreteScheduler": "DPM2",
    "KDPM2AncestralDiscreteScheduler": "DPM2 a",
    "UniPCMultistepScheduler": "UniPC",
    "LCMScheduler": "LCM",
    "FlowMatchEulerDiscreteScheduler": "Euler",
    "FlowMatchHeunDiscreteScheduler": "Heun",
}
_A1111_NAMES = {s.a1111 for s in SAMPLERS.values()} | set(_A1111_BY_CLASS.values())


def a1111_name(scheduler) -> str:
    """The A1111 sampler name for a diffusers scheduler, read from its class and config (not from how it was
    chosen), so the same scheduler always gets the same name: "Euler a", "PLMS", "DPM++ 2M Karras"."""
    cls = type(scheduler).__name__
    config = getattr(scheduler, "config", {}) or {}
    name = _A1111_BY_CLASS.get(cls)
    if name is None:
        return a1111_sampler(cls)
    if name == "DPM++ 2M" and str(config.get("algorithm_type", "")).startswith("sde-"):
        name = "DPM++ 2M SDE"
    if config.get("use_karras_sigmas"):
        name += " Karras"
    return name


def a1111_sampler(name: str | None) -> str | None:
    """A sampler name in A1111's vocabulary, from an A1111 name, a --scheduler name or a diffusers class name
    (older sidecars say "PNDM" or "FlowMatchEuler"); an unknown name is returned as it is."""
    if not name or name in _A1111_NAMES or any(name == f"{n} Karras" for n in _A1111_NAMES):
        return name
    if name in SAMPLERS:
        return SAMPLERS[name].a1111
    for cls, a1111 in _A1111_BY_CLASS.items():
        if name in (cls, cls.replace("Scheduler", ""), cls.replace("DiscreteScheduler", "")):
            return a1111
    return name


def a1111_fields(sampler: str | None) -> tuple[str | None, str | None]:
    """("DPM++ 2M", "Karras") from "DPM++ 2M Karras": the Sampler and Schedule type fields of A1111 1.9+."""
    sampler = a1111_sampler(sampler)
    if sampler and sampler.endswith(" Karras"):
        return sampler[: -len(" Karras")], "Karras"
    return sampler, None


def apply(pipe, name: str | None) -> str:
    """Swap the pipeline's scheduler for the named one (same training config); returns the A1111 name."""
    if name is not None:
        import diffusers

        sampler = SAMPLERS[name]
        pipe.scheduler = getattr(diffusers, sampler.cls).from_config(pipe.scheduler.config, **sampler.options)
    return a1111_name(pipe.scheduler)
