"""`stablekit presets`: named sets of options, built in or your own."""

from __future__ import annotations

from typing import Annotated

import typer

from .options import JsonOpt, complete_preset, json_listing

app = typer.Typer(help="List and show presets (TOML files; yours go in $STABLEKIT_HOME/presets).",
                  no_args_is_help=True)


def _as_dict(preset) -> dict:
    return {"name": preset.name, "command": preset.command, "description": preset.description,
            "values": preset.values, "path": str(preset.path), "origin": preset.origin, "problem": preset.problem}


@app.command("list")
def list_presets(
    ctx: typer.Context,
    json_output: json_listing("presets: name, command, description, values, path, origin, problem") = False,
) -> None:
    """List the presets; a file that cannot be used is listed as broken, with the reason.

    --json prints one JSON array of {name, command, description, values, path, origin, problem}.
    """
    from stablekit.preset_files import list_presets as find

    presets = find()
    for p in presets:
        if p.problem:
            ctx.obj.warn(f"preset '{p.name}' is broken: {p.path}: {p.problem}")
    if json_output:
        import json

        ctx.obj.result(json.dumps([_as_dict(p) for p in presets], sort_keys=True))
        return
    from rich.table import Table

    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("name", "command", "origin", "description"):
        table.add_column(column)
    for p in presets:
        if p.problem:
            table.add_row(p.name, "-", f"{p.origin}, broken", f"cannot be used: {p.problem}")
        else:
            table.add_row(p.name, p.command, p.origin, p.description)
    ctx.obj.table(table)


@app.command("show")
def show(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Preset name or .toml path.", autocompletion=complete_preset)],
    json_output: JsonOpt = False,
) -> None:
    """Show what a preset sets."""
    from stablekit.preset_files import find_preset

    preset = find_preset(name)
    if json_output:
        ctx.obj.result(_as_dict(preset))
        return
    ctx.obj.result(f"{preset.name}  ({preset.origin}: {preset.path})")
    ctx.obj.result(f"  for `stablekit {preset.command}`: {preset.description}")
    for key, value in preset.values.items():
        ctx.obj.result(f"  {key} = {value!r}")
