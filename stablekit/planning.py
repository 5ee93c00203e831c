"""From a resolved model and request to a device plan: the step shared by every generating command."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import devices, hub
from .devices import DevicePlan, Hardware, Overrides, Workload
from .registry import ModelSpec


@dataclass(frozen=True)
class Prepared:
    spec: ModelSpec
    hardware: Hardware
    plan: DevicePlan
    workload: Workload


def overrides_of(request) -> Overrides:
    return Overrides(device=request.device, dtype=request.dtype, offload=request.offload, vram_gib=request.vram)


def prepare(spec: ModelSpec, workload: Workload, overrides: Overrides, hardware: Hardware | None = None) -> Prepared:
    """Probe the machine (unless given) and plan; raises DoesNotFitError with what would fit."""
    hardware = hardware or devices.probe()
    return Prepared(spec, hardware, devices.plan(spec, hardware, workload, overrides), workload)


def describe(prepared: Prepared, request: Any | None = None) -> dict[str, Any]:
    """What --dry-run shows: the model, where its files are, the hardware and the plan with its reasons."""
    state = hub.local_state(prepared.spec)
    data = {
        "model": prepared.spec.id,
        "source": prepared.spec.source,
        "files": {"status": state.status, "path": str(state.path) if state.path else None,
                  "size_bytes": state.size_bytes},
        "hardware": prepared.hardware.to_dict(),
        "workload": prepared.workload.describe(),
        "plan": prepared.plan.to_dict(),
    }
    if request is not None:
        from dataclasses import asdict

        data["request"] = asdict(request)
    return data
