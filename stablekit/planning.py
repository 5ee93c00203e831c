"""A job planned on a machine: the device plan with its reasons, and the stages that must run first."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from . import devices, hub
from .devices import DevicePlan, Hardware, Overrides, Workload
from .registry import ModelSpec


@dataclass(frozen=True)
class Plan:
    """What an engine decided before loading anything.

    `memory_spec` is the record the planner saw (with an SDXL refiner, the refiner's UNet comes along);
    `inputs` holds input files already read (they settle sizes); `stages` are plans of jobs whose outputs
    this job consumes (the first frame of text-to-video), run before it.
    """

    job: Any  # stablekit.jobs.Job
    hardware: Hardware
    device_plan: DevicePlan
    workload: Workload
    memory_spec: ModelSpec
    stages: tuple[Plan, ...] = ()
    inputs: Any = None
    role: str | None = None  # for a stage: what it makes for the next one ("the first frame")

    @property
    def spec(self) -> ModelSpec:
        return self.job.spec

    @property
    def request(self) -> Any:
        return self.job.request


def overrides_of(request) -> Overrides:
    return Overrides(device=request.device, dtype=request.dtype, offload=request.offload, vram_gib=request.vram)


def plan_device(job, workload: Workload, hardware: Hardware, memory_spec: ModelSpec | None = None, *,
                stages: tuple[Plan, ...] = (), inputs: Any = None) -> Plan:
    """Plan the job's model on `hardware`; raises DoesNotFitError with what would fit."""
    from .errors import DoesNotFitError

    spec = memory_spec or job.spec
    try:
        device_plan = devices.plan(spec, hardware, workload, overrides_of(job.request))
    except DoesNotFitError as err:  # the failing plan, whole, for --dry-run to show
        failed = getattr(err, "failed_plan", None)
        if isinstance(failed, DevicePlan):
            err.failed_plan = Plan(job, hardware, failed, workload, spec, stages, inputs)  # type: ignore[attr-defined]
        raise
    return Plan(job, hardware, device_plan, workload, spec, stages, inputs)


def describe(plan: Plan) -> dict[str, Any]:
    """What --dry-run shows: whether it fits, the model, where its files are, the hardware (a hypothetical one
    for a device this machine lacks), the plan with its reasons, the job."""
    state = hub.local_state(plan.spec)
    return {
        "fits": plan.device_plan.fits,
        "model": plan.spec.id,
        "source": plan.spec.source,
        "files": {"status": state.status, "path": str(state.path) if state.path else None,
                  "size_bytes": state.size_bytes},
        "hardware": plan.hardware.to_dict(),
        "workload": plan.workload.describe(),
        "plan": plan.device_plan.to_dict(),
        "request": asdict(plan.request),
        "job": plan.job.to_dict(),
    }
