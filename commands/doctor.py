"""`stablekit doctor`: what this machine has, which libraries, and how a model would be placed."""

from __future__ import annotations

import typer

from .options import JsonOpt, ModelOpt, VramOpt


def doctor(
    ctx: typer.Context,
    model: ModelOpt = None,
    vram: VramOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Print hardware, library versions, folders and (with --model) the device plan."""
    from stablekit import devices, planning
    from stablekit.hub import offline
    from stablekit.paths import hf_hub_cache, stablekit_home
    from stablekit.provenance import versions
    from stablekit.registry import load_registry

    hardware = devices.probe()
    report = {
        "hardware": hardware.to_dict(),
        "versions": versions(),
        "folders": {"stablekit_home": str(stablekit_home()), "hf_hub_cache": str(hf_hub_cache())},
        "hub": {"offline": offline(), "logged_in": _has_token()},
    }
    if model:
        spec = load_registry().resolve(model)
        prepared = planning.prepare(spec, devices.default_workload(spec), devices.Overrides(vram_gib=vram), hardware)
        report["plan"] = planning.describe(prepared)
    console = ctx.obj
    if json_output:
        console.result(report)
        return
    hw = hardware
    console.result(f"hardware    {hw.accelerator}: {hw.name}")
    if hw.accelerator != "cpu":
        cc = f", compute capability {'.'.join(map(str, hw.compute_capability))}" if hw.compute_capability else ""
        console.result(f"            {hw.memory_total_gib:.1f} GiB device memory, {hw.memory_free_gib:.1f} free{cc}")
    console.result(f"            {hw.ram_total_gib:.1f} GiB RAM, {hw.ram_available_gib:.1f} available")
    console.result("versions    " + ", ".join(f"{k} {v}" for k, v in report["versions"].items()))
    console.result(f"home        {report['folders']['stablekit_home']}")
    console.result(f"hub cache   {report['folders']['hf_hub_cache']}"
                   + ("  (offline)" if report["hub"]["offline"] else "")
                   + ("  (logged in)" if report["hub"]["logged_in"] else "  (not logged in)"))
    if model:
        console.result("")
        console.show_plan(report["plan"], False)


def _has_token() -> bool:
    """Whether a hub token is configured; the token itself is never read into output."""
    from huggingface_hub import get_token

    return get_token() is not None
