"""Options shared by every generating command, declared once so `--seed` means the same everywhere."""

from __future__ import annotations

from enum import Enum
from typing import Annotated

import typer


def complete_model(incomplete: str) -> list[str]:
    """Model ids and aliases from the registry (no heavy imports: this runs on every <TAB>)."""
    from stablekit.registry import load_registry

    try:
        specs = list(load_registry())
    except Exception:  # a broken user catalog must not break the shell
        return []
    names = [name for spec in specs for name in (spec.id, *spec.aliases)]
    return [name for name in names if name.startswith(incomplete)]


def complete_preset(incomplete: str) -> list[str]:
    from stablekit.preset_files import list_presets

    try:
        return [p.name for p in list_presets() if p.name.startswith(incomplete)]
    except Exception:
        return []


class Dtype(str, Enum):
    float32 = "float32"
    float16 = "float16"
    bfloat16 = "bfloat16"


class Decoder(str, Enum):
    full = "full"
    tiny = "tiny"


class Offload(str, Enum):
    none = "none"
    model = "model"
    group = "group"
    sequential = "sequential"


DEVICE_PANEL = "Device"
OUTPUT_PANEL = "Output"

ModelOpt = Annotated[str | None, typer.Option(
    "--model", "-m", autocompletion=complete_model,
    help="Model id or alias (see `stablekit models list`), a hub repo id ORG/NAME, or a local folder.")]
PresetOpt = Annotated[str | None, typer.Option(
    "--preset", "-p", autocompletion=complete_preset, help="Preset name or .toml path (see `stablekit presets list`).")]
def seed_option(meaning: str):
    """--seed, with what it means for the command saying it."""
    return Annotated[int | None, typer.Option(
        "--seed", "-s", min=0, max=2**32 - 1, help=f"{meaning} Drawn and recorded when omitted.")]


def count_option(what: str):
    """-n/--count: how many outputs, the same flag in every command that makes several."""
    return Annotated[int | None, typer.Option("--count", "-n", min=1, help=f"How many {what}.  \\[default: 1]")]


SeedOpt = seed_option("Random seed; output i uses seed+i.")
DeviceOpt = Annotated[str | None, typer.Option(
    "--device", rich_help_panel=DEVICE_PANEL, help="auto, cuda, cuda:N, mps or cpu.  \\[default: auto]")]
DtypeOpt = Annotated[Dtype | None, typer.Option(
    "--dtype", rich_help_panel=DEVICE_PANEL,
    help="Compute precision.  \\[default: bf16/fp16 on GPUs; fp32 on CPU, bf16 on CPUs with AVX512_BF16/AMX]")]
OffloadOpt = Annotated[Offload | None, typer.Option(
    "--offload", rich_help_panel=DEVICE_PANEL, help="CPU offload strategy.  \\[default: the least that fits]")]
DecoderOpt = Annotated[Decoder | None, typer.Option(
    "--decoder", rich_help_panel=DEVICE_PANEL,
    help="full: the model's VAE; tiny: its TAESD (several times faster on a CPU, approximate fine detail; "
         "SD 1.x/2.x, SDXL, SD3).  \\[default: full]")]
VramOpt = Annotated[float | None, typer.Option(
    "--vram", metavar="GB", rich_help_panel=DEVICE_PANEL, help="Plan as if this many GiB of device memory were free.")]
ComputeCapabilityOpt = Annotated[str | None, typer.Option(
    "--compute-capability", metavar="X.Y", rich_help_panel=DEVICE_PANEL,
    help="With --dry-run --device cuda --vram GB: plan for a GPU of this compute capability, present or not "
         "(bf16 from 8.0).  \\[default: 8.0]")]
DryRunOpt = Annotated[bool, typer.Option(
    "--dry-run", rich_help_panel=DEVICE_PANEL, metavar="",
    help="Print the device plan and exit: nothing is downloaded or loaded.")]
OutputOpt = Annotated[str | None, typer.Option(
    "--output", "-o", rich_help_panel=OUTPUT_PANEL,
    help="File name or template, e.g. 'renders/{model}-{seed}-{index}.png'. "
         "Fields: id model seed index prompt date time.")]
OutputDirOpt = Annotated[str, typer.Option(
    "--output-dir", "-d", rich_help_panel=OUTPUT_PANEL, help="Folder that relative outputs go into.")]
OverwriteOpt = Annotated[bool, typer.Option(
    "--overwrite", rich_help_panel=OUTPUT_PANEL, metavar="",
    help="Replace existing files instead of choosing a numbered name.")]
JsonOpt = Annotated[bool, typer.Option("--json", metavar="", help="One JSON object per output on stdout.")]


def json_listing(what: str):
    """--json of a list command: says what the one JSON array holds."""
    return Annotated[bool, typer.Option("--json", metavar="", help=f"Print one JSON array of {what} on stdout.")]
def _quiet_now(ctx: typer.Context, quiet: bool) -> bool:
    """-q takes effect while the options are read, before the command says anything (a drawn seed's note)."""
    if quiet and ctx.obj is not None:
        ctx.obj.quiet = True
    return quiet


QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", metavar="", callback=_quiet_now,
                                        help="Only results and errors: no progress.")]
NoServerOpt = Annotated[bool, typer.Option(
    "--no-server", rich_help_panel=DEVICE_PANEL,
    metavar="", help="Run here even when `stablekit serve` is running (also: STABLEKIT_SERVER=0).")]
def _lock_command(ctx: typer.Context, locked: bool) -> bool:
    """--locked holds for the whole command, from reading the model's configs to the last load."""
    if locked:
        from stablekit.lockfile import start_locking

        ctx.call_on_close(start_locking())
    return locked


LockedOpt = Annotated[bool, typer.Option(
    "--locked", rich_help_panel=DEVICE_PANEL, callback=_lock_command,
    metavar="", help="Load only the files in stablekit.lock, each checked against its sha256 "
                     "(also: STABLEKIT_LOCKED=1).")]


def value(option: Enum | None) -> str | None:
    return option.value if option is not None else None


def device_flags(device: str | None, dtype: Dtype | None, offload: Offload | None,
                 vram: float | None) -> dict:
    return {"device": None if device in (None, "auto") else device, "dtype": value(dtype),
            "offload": value(offload), "vram": vram}


def capability(text: str | None, dry_run: bool) -> tuple[int, int] | None:
    """--compute-capability X.Y as a pair; it describes a GPU to plan for, so it needs --dry-run."""
    if text is None:
        return None
    from stablekit.errors import UsageError

    if not dry_run:
        raise UsageError("--compute-capability plans for a GPU you may not have: use it with --dry-run",
                         hint="e.g. --dry-run --device cuda --vram 8 --compute-capability 7.5")
    major, dot, minor = text.partition(".")
    if not (major.isdigit() and (minor.isdigit() or not dot)):
        raise UsageError(f"--compute-capability {text}: not X.Y", hint="e.g. 7.5 (T4, RTX 20xx), 8.6, 8.9, 9.0")
    return int(major), int(minor or 0)


def submit(ctx: typer.Context, jobs: list, *, output_dir: str = ".", overwrite: bool = False, json_output: bool = False,
           dry_run: bool = False, no_server: bool = False, locked: bool = False,
           as_batch: bool = False, compute_capability: str | None = None) -> list[dict]:
    """Hand jobs to the library: their device plans with --dry-run, else to a running `stablekit serve`, else
    run them here into an output sink (`as_batch`: through the batch loop, for a prompts file)."""
    from stablekit import client
    from stablekit.jobs import output_count

    console = ctx.obj
    total = sum(output_count(job) for job in jobs)
    capability(compute_capability, dry_run)

    def on_result(item: dict) -> None:
        console.result(item if json_output else item["path"])

    if not dry_run:
        served = client.run(jobs, console, on_result=on_result, output_dir=output_dir, overwrite=overwrite,
                            total=total, no_server=no_server or locked or as_batch)
        # (a server cannot honour this run's lock, nor run the batch loop of a prompts file yet)
        if served is not None:
            return served
    from stablekit import runner
    from stablekit.sink import Sink

    if dry_run:
        for data in runner.dry_run(jobs[0], compute_capability=capability(compute_capability, dry_run)):
            console.show_plan(data, json_output)
        return []
    sink = Sink(output_dir, overwrite=overwrite, total=total, on_result=on_result)
    from stablekit.lockfile import locking

    with locking(locked):
        if as_batch:
            from stablekit.batch import run_jobs

            return run_jobs(jobs, sink, console)
        return runner.run(jobs, sink, console)


def default(command: str, field: str) -> str:
    """`[default: X]` for help text, read from the request type so help never drifts from the code."""
    import dataclasses

    from stablekit.params import REQUESTS

    value = next(f.default for f in dataclasses.fields(REQUESTS[command]) if f.name == field)
    return f"\\[default: {value}]"


FormatOpt = Annotated[str | None, typer.Option(
    "--format", "-f", rich_help_panel=OUTPUT_PANEL, metavar="FORMAT",
    help="File format when --output has no extension (or no --output); see the list below.")]


def with_format(output: str | None, fmt: str | None, choices: tuple[str, ...], extension: str | None = None) -> \
        str | None:
    """--format applied to --output: the extension it names is added where the name has none; a name whose
    extension says otherwise is refused. `extension` maps a format to its suffix ("frames" -> "")."""
    from pathlib import Path

    from stablekit.errors import UsageError

    if fmt is None:
        return output
    fmt = fmt.lower().lstrip(".")
    if fmt not in choices:
        raise UsageError(f"--format {fmt}: not one of {', '.join(choices)}")
    suffix = extension if extension is not None else f".{fmt}"
    if output is None or output.endswith(("/", "\\")):
        return (output or "") + "{prompt}-{seed}" + suffix
    if Path(output).suffix:
        if Path(output).suffix.lower() != suffix and not (fmt == "jpg" and Path(output).suffix.lower() == ".jpeg"):
            raise UsageError(f"--output {output} and --format {fmt} disagree", hint="give one of them")
        return output
    return output + suffix


def expand_count(job, count: int | None, note) -> list:
    """-n N as N jobs, job i with seed + i (each made, named and reproducible on its own)."""
    from stablekit.jobs import with_seed

    if not count or count == 1:
        return [job]
    first = with_seed(job, note)
    return [first.with_request(seed=(first.seed + i) % 2**32) for i in range(count)]
