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


def resolve_request(command: str, *, prompt: str, model: str | None, preset: str | None, flags: dict[str, Any],
                    fallback_model: str | None = None, skip_defaults: tuple[str, ...] = (),
                    **checkpoint: str | None) -> tuple[ModelSpec, Any]:
    """The model and the request a command's flags mean: flag > preset > model defaults > global defaults.

    The model itself comes from --model, else the preset, else `fallback_model`, else the command's default.
    `skip_defaults` are model defaults that must not apply (an input image decides the size);
    `checkpoint` passes --family/--config through for single-file checkpoints.
    """
    from . import params as requests
    from .preset_files import load_preset
    from .registry import load_registry

    preset_values = load_preset(preset, command).values if preset else {}
    model_name = model or preset_values.get("model") or fallback_model or requests.REQUESTS[command].model
    spec = load_registry().resolve(model_name, command, **checkpoint)
    defaults = {k: v for k, v in spec.defaults.items() if k not in skip_defaults}
    request = requests.resolve(command, prompt=prompt, flags={**flags, "model": model_name}, preset=preset_values,
                               model_defaults=defaults)
    return spec, request


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
