"""Drives jobs through the engines, the same way for every modality and every front end.

Each engine module implements one protocol: `plan(job, hardware) -> Plan` (checks and device plan, nothing
loaded), `session_key(plan)` (what a loaded session can be reused for), `load(plan, progress) -> Session`,
and `Session.run(plan, sink, inputs)`. Stages (the first frame of text-to-video, the image of text-to-3D)
are plans of their own, run first through the same pool, their outputs handed on as `inputs`.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Iterator
from types import ModuleType
from typing import Any

from .console import Progress
from .jobs import COMMANDS, Job, with_seed
from .planning import Plan, describe
from .sessions import SessionPool
from .sink import CaptureSink, Sink


def engine_for(command: str) -> ModuleType:
    if command not in COMMANDS:
        raise ValueError(f"no engine for {command!r}")
    return importlib.import_module(f"stablekit.engines.{command}")


def plan_job(job: Job, hardware=None, *, dry_run: bool = False, compute_capability=None) -> Plan:
    """Check the job and plan it (and its stages) on this machine, or on `hardware`; nothing is loaded.

    With `dry_run`, a --device this machine lacks is planned as a hypothetical one (--vram GiB, and
    `compute_capability` for CUDA); without it an absent device stays an error."""
    from .devices import hypothetical, probe
    from .outputs import OutputOptions, check_template

    engine = engine_for(job.command)
    check_template(OutputOptions(output=job.output), engine.EXTENSIONS)
    if hardware is None:
        hardware = probe(job.request.device)
        if dry_run:
            hardware = hypothetical(hardware, job.request.device, job.request.vram, compute_capability)
    return engine.plan(job, hardware)


def dry_run(job: Job, hardware=None, *, compute_capability=None) -> Iterator[dict[str, Any]]:
    """What --dry-run prints: each stage's plan, then the job's. A plan that does not fit is yielded too
    (`fits: false`, with why) before its DoesNotFitError is raised, so the command still exits 1."""
    from .errors import DoesNotFitError

    try:
        plan = plan_job(job, hardware, dry_run=True, compute_capability=compute_capability)
    except DoesNotFitError as err:
        failed = getattr(err, "failed_plan", None)
        if isinstance(failed, Plan):
            yield describe(failed)
        raise
    for part in (*plan.stages, plan):
        yield describe(part)


def summary(plan: Plan) -> str:
    p = plan.device_plan
    line = (f"plan: {plan.spec.id} on {p.device}, {p.dtype}, offload {p.offload}, ~{p.peak_gib:.1f} GiB of "
            f"{p.memory_kind} (budget {p.budget_gib:.1f})")
    if p.device == "cpu" and p.dtype == "bfloat16":  # a new default on bf16 CPUs: say why
        line += "".join(f"; {r}" for r in p.reasons if r.startswith("dtype "))
    return line


def execute(plan: Plan, sink: Sink, pool: SessionPool) -> None:
    """Run a planned job: its stages first (kept outputs go to `sink` too), then the job itself."""
    from .quiet import quiet_libraries, silence_loaded

    inputs: dict[str, list[Any]] = {}
    for stage in plan.stages:
        capture = CaptureSink(forward=sink if stage.job.output is not None else None)
        progress = pool.progress
        progress.stage(f"Drawing {stage.role or 'the input'} with {stage.spec.id}")
        execute(stage, capture, pool)
        inputs[stage.job.command] = capture.values
        inputs[f"{stage.job.command}_results"] = capture.results
    engine = engine_for(plan.job.command)
    with quiet_libraries():
        session = pool.acquire(plan, engine)
        silence_loaded()
        session.run(plan, sink, inputs)


def run(jobs: Iterable[Job], sink: Sink, progress: Progress = Progress(), *, pool: SessionPool | None = None,
        hardware=None) -> list[dict]:
    """Plan every job first (bad input fails before anything loads), then run them in order."""
    plans = plan_all(jobs, progress, hardware)
    check_outputs(plans, sink)
    own = pool is None
    pool = pool or SessionPool(progress)
    try:
        for plan in plans:
            for part in (*plan.stages, plan):
                progress.note(summary(part))
            execute(plan, sink, pool)
    finally:
        if own:
            pool.close()
    return sink.results


def check_outputs(plans: Iterable[Plan], sink: Sink) -> None:
    """Every output name can be made and its folder written, before anything loads (kept stage outputs too)."""
    for plan in plans:
        for part in (*plan.stages, plan):
            if part is plan or part.job.output is not None:
                sink.check(part.job)


def plan_all(jobs: Iterable[Job], progress: Progress = Progress(), hardware=None) -> list[Plan]:
    """Plan every job, probing each device the jobs name once (cuda:1 plans with GPU 1's memory)."""
    from .devices import probe

    probed: dict[str | None, object] = {}
    plans = []
    for job in jobs:
        device = job.request.device
        if hardware is None and device not in probed:
            probed[device] = probe(device)
        plans.append(plan_job(with_seed(job, progress.note), hardware or probed[device]))
    return plans
