"""`stablekit mesh`: one image (or a prompt, drawn first) to a vertex-coloured 3D mesh with TripoSR."""

from __future__ import annotations

from enum import Enum
from typing import Annotated

import typer

from .options import (
    DeviceOpt,
    DryRunOpt,
    DtypeOpt,
    JsonOpt,
    ModelOpt,
    OffloadOpt,
    OutputDirOpt,
    OutputOpt,
    OverwriteOpt,
    PresetOpt,
    QuietOpt,
    SeedOpt,
    VramOpt,
    complete_model,
    device_flags,
    value,
)

EPILOG = """Examples:

  stablekit mesh --image chair.png                  (RGBA: the transparent background frames the object)

  stablekit mesh --image photo.jpg -o chair.obj     (RGB: background removed with rembg, if installed)

  stablekit mesh "a wooden chair, studio lighting, white background" --keep-image

  stablekit mesh --image chair.png --model tiny-triposr      (offline smoke run)

  stablekit mesh --image chair.png --resolution 256 --dry-run (show the device plan)
"""

MESH_PANEL = "Mesh"


class MeshFormat(str, Enum):
    glb = "glb"
    obj = "obj"
    ply = "ply"
    stl = "stl"


class Up(str, Enum):
    y = "y"
    z = "z"


def mesh(
    ctx: typer.Context,
    prompt: Annotated[str | None, typer.Argument(
        help="Text to 3D: what the image model draws first (one object, plain background).")] = None,
    image: Annotated[str | None, typer.Option(
        "--image", "-i", help="Image to 3D: RGBA with a transparent background, or RGB (see --no-remove-bg).")] = None,
    image_model: Annotated[str | None, typer.Option(
        "--image-model", autocompletion=complete_model,
        help="Image model for a prompt.  \\[default: sdxl-turbo]")] = None,
    keep_image: Annotated[bool, typer.Option(
        "--keep-image", help="Keep the image drawn from the prompt beside the mesh (.png).")] = False,
    remove_bg: Annotated[bool | None, typer.Option(
        "--remove-bg/--no-remove-bg", help="Cut an RGB image's object out with rembg (optional dependency); "
        "--no-remove-bg uses it as it is.  \\[default: remove]")] = None,
    foreground_ratio: Annotated[float | None, typer.Option(
        "--foreground-ratio", rich_help_panel=MESH_PANEL,
        help="Share of the frame the object fills.  \\[default: 0.85]")] = None,
    resolution: Annotated[int | None, typer.Option(
        "--resolution", rich_help_panel=MESH_PANEL,
        help="Marching-cubes grid per axis (16-512).  \\[default: 256 on a GPU, 128 on a CPU]")] = None,
    threshold: Annotated[float | None, typer.Option(
        "--threshold", rich_help_panel=MESH_PANEL, help="Density of the surface.  \\[default: 25]")] = None,
    chunk_size: Annotated[int | None, typer.Option(
        "--chunk-size", rich_help_panel=MESH_PANEL,
        help="Grid points queried at once (0: all).  \\[default: sized to memory]")] = None,
    output_format: Annotated[MeshFormat | None, typer.Option(
        "--format", "-f", rich_help_panel=MESH_PANEL,
        help="File format when --output has no extension.  \\[default: glb]")] = None,
    up: Annotated[Up | None, typer.Option(
        "--up", rich_help_panel=MESH_PANEL,
        help="Up axis: y (glTF; the input view faces +Z) or z (TripoSR's own frame).  \\[default: y]")] = None,
    seed: SeedOpt = None,
    model: ModelOpt = None,
    preset: PresetOpt = None,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    offload: OffloadOpt = None,
    vram: VramOpt = None,
    output: OutputOpt = None,
    output_dir: OutputDirOpt = ".",
    overwrite: OverwriteOpt = False,
    json_output: JsonOpt = False,
    dry_run: DryRunOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Make a 3D mesh (GLB, OBJ, PLY or STL) from an image or a text prompt."""
    from stablekit import planning
    from stablekit.engines import mesh as engine
    from stablekit.outputs import OutputOptions

    console = ctx.obj
    console.quiet = console.quiet or quiet
    flags = {"image": image, "image_model": image_model, "keep_image": keep_image or None,
             "remove_background": remove_bg, "foreground_ratio": foreground_ratio, "mc_resolution": resolution,
             "mc_threshold": threshold, "chunk_size": chunk_size, "output_format": value(output_format),
             "up": value(up), "seed": seed, **device_flags(device, dtype, offload, vram)}
    spec, request = planning.resolve_request("mesh", prompt=prompt or "", model=model, preset=preset, flags=flags)
    engine.validate(request, spec)
    options = OutputOptions(output=output, output_dir=output_dir, overwrite=overwrite)
    engine.check_output(request, options)
    prepared = engine.prepare(spec, request)
    stage = engine.image_stage(request, prepared.hardware)
    if dry_run:
        if stage:
            console.show_plan(planning.describe(stage.prepared, stage.request), json_output)
        console.show_plan(planning.describe(prepared, request), json_output)
        return
    if stage:
        console.show_plan_summary(stage.prepared.plan)
    console.show_plan_summary(prepared.plan)
    engine.generate(prepared, request, options, console, stage=stage,
                    on_output=lambda item: console.result(item if json_output else item["path"]))
