"""`stablekit batch`: a JSON Lines file of jobs of any command, each model loaded once, resumable."""

from __future__ import annotations

from enum import Enum
from typing import Annotated

import typer

from .options import (
    DeviceOpt,
    DryRunOpt,
    DtypeOpt,
    LockedOpt,
    NoServerOpt,
    OffloadOpt,
    OutputDirOpt,
    OverwriteOpt,
    QuietOpt,
    VramOpt,
    complete_preset,
    device_flags,
)

EPILOG = """Examples:

  stablekit batch jobs.jsonl -d renders

  stablekit batch jobs.jsonl -d renders --set num_inference_steps=4 --vram 8

  make-jobs | stablekit batch - -d renders --json > results.jsonl

  stablekit batch jobs.jsonl -d renders --dry-run     (what would run, the plans)

  stablekit batch --from-sidecars renders -d again     (re-render a folder)

  stablekit batch jobs.jsonl -d renders --engine ray --workers 2
                                   (Ray workers; outputs written here)

A line of jobs.jsonl (keys: the job fields, as in presets and sidecars):

  {"command": "image", "prompt": "a fox", "model": "sdxl-turbo", "id": "fox"}

Outputs are named {id}.EXT unless a line gives "output"; a rerun skips jobs
whose outputs are there with the same parameters.

Exit codes: 0 all done or skipped, 1 some failed (the rest ran), 2 bad file
or usage, 130 Ctrl-C, 143 SIGTERM.
"""


class Engine(str, Enum):
    local = "local"
    ray = "ray"


def batch(
    ctx: typer.Context,
    file: Annotated[str | None, typer.Argument(
        help="JSON Lines job file, one job per line ('-' for stdin).", show_default=False)] = None,
    from_sidecars: Annotated[str | None, typer.Option(
        "--from-sidecars", metavar="DIR", help="Instead of a FILE: the jobs that made the outputs in DIR, read "
        "from their sidecars, each output named as before (re-render a folder).")] = None,
    set_: Annotated[list[str] | None, typer.Option(
        "--set", metavar="KEY=VALUE", help="Default for every line that has the key (a line's own value wins); "
        "repeatable.")] = None,
    preset: Annotated[list[str] | None, typer.Option(
        "--preset", "-p", metavar="NAME", autocompletion=complete_preset,
        help="Preset for the lines of its command (one per command); repeatable.")] = None,
    output_dir: OutputDirOpt = ".",
    manifest: Annotated[str | None, typer.Option(
        "--manifest", rich_help_panel="Output",
        help="Where each job's record is appended.  \\[default: OUTPUT_DIR/stablekit-batch.jsonl]")] = None,
    fail_fast: Annotated[bool, typer.Option("--fail-fast", metavar="", help="Stop at the first failing job.")] = False,
    overwrite: OverwriteOpt = False,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    offload: OffloadOpt = None,
    vram: VramOpt = None,
    json_output: Annotated[bool, typer.Option(
        "--json", metavar="", help="One JSON record per job on stdout (the manifest's).")] = False,
    dry_run: DryRunOpt = False,
    quiet: QuietOpt = False,
    no_server: NoServerOpt = False,
    locked: LockedOpt = False,
    engine: Annotated[Engine, typer.Option(
        "--engine", rich_help_panel="Scale out", help="local: this process; ray: Ray workers (pip install "
        "'stablekit[ray]'), outputs still written here.")] = Engine.local,
    address: Annotated[str | None, typer.Option(
        "--address", rich_help_panel="Scale out", help="Ray cluster: auto, HOST:PORT or ray://HOST:PORT.  "
        "\\[default: a private local instance on 127.0.0.1]")] = None,
    workers: Annotated[int | None, typer.Option(
        "--workers", min=1, rich_help_panel="Scale out",
        help="Ray workers.  \\[default: one per GPU; on CPUs only, one per --cpus-per-worker]")] = None,
    gpus_per_worker: Annotated[float | None, typer.Option(
        "--gpus-per-worker", min=0, rich_help_panel="Scale out",
        help="GPUs each Ray worker holds (0.5 packs two per GPU).  \\[default: 1 where there are GPUs]")] = None,
    cpus_per_worker: Annotated[float, typer.Option(
        "--cpus-per-worker", min=0.01, rich_help_panel="Scale out", help="CPUs each Ray worker holds.")] = 1.0,
) -> None:
    """Render a JSON Lines file of jobs (any command per line): models loaded once, failures recorded, resumable."""
    from pathlib import Path

    from stablekit import batch as batches
    from stablekit.batch_file import parse_sets
    from stablekit.batch_progress import BatchProgress
    from stablekit.manifest import NAME, Manifest

    console = ctx.obj
    driver = ray_driver(engine, address, workers, gpus_per_worker, cpus_per_worker)
    sets = parse_sets(set_ or [])
    sets.update({key: str(value) for key, value in device_flags(device, dtype, offload, vram).items()
                 if value is not None})
    entries = job_entries(file, from_sidecars, sets, preset or [])
    record_file = Manifest(manifest or Path(output_dir) / NAME)
    if dry_run:
        return show_dry_run(console, batches.dry_run(entries, record_file, output_dir), json_output)
    progress = BatchProgress(console)

    def show(record: dict) -> None:  # --json: the record; else the paths of a done or skipped job's outputs
        if json_output:
            progress.result(record)
        elif record["status"] in ("done", "skipped"):
            for path in record["outputs"]:
                progress.result(path)

    try:
        outcome = served(entries, progress, show, output_dir, record_file, overwrite, fail_fast,
                         no_server or locked or bool(driver)) or batches.run_batch(
            entries, output_dir=output_dir, manifest=record_file, progress=progress, overwrite=overwrite,
            fail_fast=fail_fast, on_record=show, **driver)
    except batches.Interrupted as stop:
        console.error(f"interrupted: {counts(stop.outcome)}", hint=f"run the same command again to continue "
                      f"(the manifest is {record_file.path})")
        raise typer.Exit(stop.exit_code) from None
    console.info(f"batch: {counts(outcome)}; manifest: {record_file.path}")
    if outcome.failed:
        raise batches.failure(outcome)


def served(entries, progress, show, output_dir, manifest, overwrite, fail_fast, no_server):
    """The batch run by a live `stablekit serve` (its warm models), as an Outcome; None when no server took it."""
    from stablekit import client
    from stablekit.batch import Interrupted, Outcome

    records = []

    def on_record(record: dict) -> None:
        records.append(record)
        show(record)

    try:
        if client.run_batch(entries, progress, on_result=on_record, output_dir=output_dir, manifest=str(manifest.path),
                            overwrite=overwrite, fail_fast=fail_fast, no_server=no_server) is None:
            return None
    except KeyboardInterrupt:
        stop = Interrupted()
        stop.outcome = Outcome(records, manifest.path)
        raise stop from None
    return Outcome(records, manifest.path)


def job_entries(file: str | None, from_sidecars: str | None, sets: dict, presets: list[str]) -> list:
    """The batch's jobs, checked: from the job FILE, or from the sidecars in --from-sidecars DIR."""
    import sys

    from stablekit.batch_file import entries_from_sidecars, load_entries
    from stablekit.errors import UsageError

    if (file is None) == (from_sidecars is None):
        raise UsageError("give a job FILE or --from-sidecars DIR" + (", not both" if file else ""),
                         hint="stablekit batch jobs.jsonl -d renders, or stablekit batch --from-sidecars old -d new")
    if from_sidecars is not None:
        return entries_from_sidecars(from_sidecars, sets=sets, presets=presets)
    return load_entries(file, sys.stdin, sets=sets, presets=presets)


def ray_driver(engine: Engine, address, workers, gpus_per_worker, cpus_per_worker) -> dict:
    """run_batch's `driver` for --engine ray (checked, and Ray found, before anything runs); {} for local."""
    if engine is not Engine.ray:
        given = [flag for flag, value in (("--address", address), ("--workers", workers),
                                          ("--gpus-per-worker", gpus_per_worker)) if value is not None]
        if given:
            from stablekit.errors import UsageError

            raise UsageError(f"{given[0]} is for --engine ray", hint=f"add --engine ray, or drop {given[0]}")
        return {}
    from stablekit.distributed import RayOptions
    from stablekit.ray_cluster import import_ray

    import_ray()
    return {"driver": RayOptions(address, workers, gpus_per_worker, cpus_per_worker).check().driver()}


def counts(outcome) -> str:
    if outcome is None:
        return "nothing finished"
    parts = [f"{outcome.count(status)} {status}" for status in ("done", "skipped", "failed", "interrupted")
             if outcome.count(status)]
    return ", ".join(parts) or "nothing finished"


def show_dry_run(console, models: list[dict], as_json: bool) -> None:
    """Per model: how many jobs would run, be skipped or fail, and each device plan (stdout: it is the result)."""
    if as_json:
        for model in models:
            console.result(model)
        return
    run, skip = sum(len(m["run"]) for m in models), sum(len(m["skip"]) for m in models)
    fail = sum(len(m["fail"]) for m in models)
    console.result(f"{run + skip + fail} jobs: {run} would run, {skip} skipped (done)"
                   + (f", {fail} would fail" if fail else ""))
    for model in models:
        console.result("")
        console.result(f"{model['model']}: {len(model['run'])} to run, {len(model['skip'])} skipped"
                       + (f", {len(model['fail'])} would fail" if model["fail"] else ""))
        for failing in model["fail"]:
            console.result(f"  {failing['id']}: {failing['error']}")
        for plan in model["plans"]:
            console.show_plan(plan, False)
