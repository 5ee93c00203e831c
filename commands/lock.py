"""`stablekit lock`: pin the exact model files a project renders with, for reproducible and offline CI."""

from __future__ import annotations

from typing import Annotated

import typer

from .options import complete_model

EPILOG = """Examples:

  stablekit lock sdxl-turbo                       (writes ./stablekit.lock)

  stablekit lock --from jobs.jsonl --from presets/poster.toml

  stablekit image "a lighthouse" -m sdxl-turbo --locked     (only the locked files, each hash checked)

  stablekit models pull --locked                  (on a new machine: exactly the locked files)

Stages are locked too: the SDXL refiner, the fp16-fix VAE, the image model of text-to-video and text-to-3D.
"""


def lock(
    ctx: typer.Context,
    models: Annotated[list[str] | None, typer.Argument(
        help="Models to lock (ids, aliases, hub repos or folders).", autocompletion=complete_model)] = None,
    from_files: Annotated[list[str] | None, typer.Option(
        "--from", help="Lock the models these job files (.jsonl, one job per line) or presets (.toml) use.")]
    = None,
    lockfile: Annotated[str | None, typer.Option(
        "--lockfile", help="The lockfile to write.  \\[default: ./stablekit.lock]")] = None,
) -> None:
    """Write stablekit.lock: each model's repo, resolved commit, and every file it loads with size and sha256."""
    from pathlib import Path

    from stablekit.errors import UsageError
    from stablekit.lockfile import LOCKFILE, lock_models, models_of_jobs

    names = list(models or []) + (models_of_jobs(from_files) if from_files else [])
    if not names:
        raise UsageError("nothing to lock", hint="name models (stablekit lock sdxl-turbo) or --from jobs.jsonl")
    console = ctx.obj
    written = lock_models(names, path=Path(lockfile or LOCKFILE), progress=console)
    for entry in written.models.values():
        where = f"{entry.repo}@{entry.commit[:12]}" if entry.commit else entry.source
        console.info(f"{entry.id}: {len(entry.files)} files ({where})")
    console.result(str(written.path))
