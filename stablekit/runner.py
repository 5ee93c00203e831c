"""Drives jobs through the engines, the same way for every modality and every front end.

Each engine module implements one protocol: `plan(job, hardware) -> Plan` (checks and device plan, nothing
loaded), `session_key(plan)` (what a loaded session can be reused for), `load(plan, progress) -> Session`,
and `Session.run(plan, sink, inputs)`. Stages (the first frame of text-to-video, the image of text-to-3D)
are plans of their own, run first through the same pool, their outputs handed on as `inputs`.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
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


def plan_job(job: Job, hardware=None) -> Plan:
    """Check the job and plan it (and its stages) on this machine, or on `hardware`; nothing is loaded."""
    from .devices import probe
    from .outputs import OutputOptions, check_template

    engine = engine_for(job.command)
    check_template(OutputOptions(output=job.output), engine.EXTENSIONS)
    return engine.plan(job, hardware or probe(job.request.device))


def dry_run(job: Job, hardware=None) -> list[dict[str, Any]]:
    """What --dry-run prints: each stage's plan, then the job's."""
    plan = plan_job(job, hardware)
    return [describe(p) for p in (*plan.stages, plan)]


def summary(plan: Plan) -> str:
    p = plan.device_plan
    return (f"plan: {plan.spec.id} on {p.device}, {p.dtype}, offload {p.offload}, ~{p.peak_gib:.1f} GiB of "
            f"{p.memory_kind} (budget {p.budget_gib:.1f})")


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
