"""`stablekit models`: the registry and the weights on disk."""

from __future__ import annotations

from typing import Annotated

import typer

from .options import JsonOpt, complete_model, json_listing

app = typer.Typer(help="List, inspect, download and remove models.", no_args_is_help=True)

ModelArg = Annotated[str, typer.Argument(help="Model id or alias.", autocompletion=complete_model)]


def _size(num_bytes: int) -> str:
    if not num_bytes:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if num_bytes < 1024 or unit == "TiB":
            return f"{num_bytes:.0f} {unit}" if unit == "B" else f"{num_bytes:.1f} {unit}"
        num_bytes /= 1024
    return "-"


def _where(files: dict) -> str:
    return f" at {files['path']} ({_size(files['size_bytes'])})" if files["path"] else ""


def _summary(spec) -> dict:
    from stablekit.hub import local_state

    state = local_state(spec)
    data = spec.to_dict()
    data["weights_gib"] = {"float16": round(spec.memory.total_params * 2e6 / 1024**3, 2),
                           "float32": round(spec.memory.total_params * 4e6 / 1024**3, 2)}
    data["files"] = {"status": state.status, "path": str(state.path) if state.path else None,
                     "size_bytes": state.size_bytes}
    return data


def _needs_at_defaults(spec) -> dict:
    """The planner's peak for a plain run with the model's defaults, all on one device: what a user sizes a
    machine by (the catalog's per-unit figures are zero for models that use their family's formula)."""
    from stablekit.memory_plan import Strategy, estimate
    from stablekit.planner import default_workload

    work = default_workload(spec)
    return {"workload": work.describe(),
            "gpu_bfloat16_gib": round(estimate(spec, work, "bfloat16", "cuda", Strategy()).peak, 1),
            "cpu_float32_gib": round(estimate(spec, work, "float32", "cpu", Strategy()).peak, 1)}


@app.command("list")
def list_models(
    ctx: typer.Context,
    modality: Annotated[str | None, typer.Option(
        "--modality", help="Only image, video, audio, mesh or text models.")] = None,
    json_output: json_listing("models: id, name, modality, tasks, source, licence, memory, download state") = False,
) -> None:
    """List every known model, with licence, memory needs and download state."""
    from stablekit.errors import UsageError
    from stablekit.registry import MODALITIES, load_registry

    if modality and modality not in MODALITIES:
        raise UsageError(f"--modality {modality}: unknown", hint=f"use one of {', '.join(MODALITIES)}")
    specs = [s for s in load_registry() if modality in (None, s.modality)]
    console = ctx.obj
    if json_output:
        import json

        console.result(json.dumps([_summary(s) for s in specs], sort_keys=True))
        return
    from rich.table import Table

    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("id", "modality", "params", "fp16 weights", "gated", "licence", "files"):
        table.add_column(column, justify="right" if column in ("params", "fp16 weights") else "left",
                         no_wrap=column != "licence")
    for spec in specs:
        data = _summary(spec)
        files = data["files"]
        state = files["status"] if files["status"] == "missing" else f"{files['status']} {_size(files['size_bytes'])}"
        table.add_row(spec.id, spec.modality, f"{spec.memory.total_params / 1000:.2f}B",
                      f"{data['weights_gib']['float16']:.1f} GiB", "yes" if spec.gated else "", spec.license, state)
    console.table(table)


@app.command("info")
def info(ctx: typer.Context, model: ModelArg, json_output: JsonOpt = False) -> None:
    """Everything the registry knows about one model."""
    from stablekit.registry import load_registry

    spec = load_registry().resolve(model)
    data = _summary(spec)
    data["memory"]["at_defaults"] = needs = _needs_at_defaults(spec)
    console = ctx.obj
    if json_output:
        console.result(data)
        return
    memory = data["memory"]
    components = ", ".join(f"{name} {m:.1f}M" for name, m in memory["params"].items())
    sized = f" ({needs['workload']})" if needs["workload"] != "default size" else ""
    lines = [
        f"{data['name']}  [{data['id']}]",
        f"  {data['description']}" if data["description"] else None,
        f"aliases     {', '.join(data['aliases'])}" if data["aliases"] else None,
        f"modality    {data['modality']} ({data['family']}); tasks: {', '.join(data['tasks'])}",
        f"loader      {data['library']}.{data['loader']}",
        f"source      {data['source']}" + (f" (variant {data['variant']})" if data["variant"] else ""),
        f"fallbacks   {', '.join(data['fallbacks'])}" if data["fallbacks"] else None,
        f"licence     {data['license']}" + (f" — {data['license_url']}" if data["license_url"] else ""),
        f"gated       {'yes: accept the licence on the hub page, then `hf auth login`' if data['gated'] else 'no'}",
        "defaults    " + ", ".join(f"{k}={v}" for k, v in data["defaults"].items()) if data["defaults"] else None,
        "limits      " + ", ".join(f"{k}={v}" for k, v in data["limits"].items()) if data["limits"] else None,
        f"memory      {memory['total_params_millions'] / 1000:.2f}B parameters ({components}); weights "
        f"{data['weights_gib']['float16']:.1f} GiB in fp16/bf16, {data['weights_gib']['float32']:.1f} GiB in fp32",
        f"needs       ~{needs['gpu_bfloat16_gib']:.1f} GiB on a GPU (bf16), ~{needs['cpu_float32_gib']:.1f} GiB of RAM "
        f"on a CPU (float32), at its defaults{sized} with nothing offloaded; `--dry-run` plans a job here",
        f"files       {data['files']['status']}" + _where(data["files"]),
        f"origin      {data['origin']}",
    ]
    for line in lines:
        if line is not None:
            console.result(line)


@app.command("pull")
def pull(
    ctx: typer.Context,
    model: Annotated[str | None, typer.Argument(
        help="Model id or alias (with --locked: all locked models when omitted).", autocompletion=complete_model)]
    = None,
    configs_only: Annotated[bool, typer.Option(
        "--configs-only", metavar="", help="Only configs and tokenizers (what single-file checkpoints need).")] = False,
    locked: Annotated[bool, typer.Option(
        "--locked", metavar="",
        help="Fetch exactly the files stablekit.lock lists, at the locked commit, and check them.")]
    = False,
) -> None:
    """Download a model's files (only those its loader reads), or build a tiny model."""
    from stablekit import hub
    from stablekit.errors import UsageError
    from stablekit.registry import load_registry

    if locked:  # stablekit/lockfile.py
        from stablekit.lockfile import pull_all

        for folder in pull_all([model] if model else None, quiet=ctx.obj.quiet):
            ctx.obj.result(str(folder))
        return
    if model is None:
        raise UsageError("missing the model", hint="stablekit models pull MODEL (or --locked for the lockfile's)")

    spec = load_registry().resolve(model)
    console = ctx.obj
    if spec.tiny:
        already = hub.local_state(spec).ready
        folder = hub.pull(spec, quiet=console.quiet)
        console.info(f"{spec.id}: {'already built' if already else 'built'} (random weights, {spec.tiny} layout)")
        console.result(str(folder))
        return
    console.stage(f"Pulling {'the configs of ' if configs_only else ''}{spec.id} from {spec.source}")
    console.result(str(hub.pull(spec, quiet=console.quiet, configs_only=configs_only)))


@app.command("path")
def path(ctx: typer.Context, model: ModelArg) -> None:
    """Print the folder that holds a model's files (for other tools and scripts)."""
    from stablekit import hub
    from stablekit.errors import ModelNotDownloadedError
    from stablekit.registry import load_registry

    spec = load_registry().resolve(model)
    state = hub.local_state(spec)
    if not state.ready:
        raise ModelNotDownloadedError(f"{spec.id} is not on disk ({state.status})",
                                      hint=f"run 'stablekit models pull {spec.id}'")
    ctx.obj.result(str(state.path))


@app.command("rm")
def remove(
    ctx: typer.Context,
    model: ModelArg,
    yes: Annotated[bool, typer.Option("--yes", "-y", metavar="", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete a model's downloaded (or built) files."""
    import sys

    from stablekit import hub
    from stablekit.errors import UsageError
    from stablekit.registry import load_registry

    spec = load_registry().resolve(model)
    state = hub.local_state(spec)
    console = ctx.obj
    if state.status == "missing":
        console.info(f"{spec.id}: nothing on disk")
        return
    if not yes:
        if not sys.stdin.isatty():
            raise UsageError(f"refusing to delete {spec.id} without confirmation", hint="pass --yes")
        typer.confirm(f"Delete {spec.id} ({_size(state.size_bytes)})?", abort=True, err=True)
    freed = hub.remove(spec)
    console.info(f"removed {spec.id}, freed {_size(freed)}")
