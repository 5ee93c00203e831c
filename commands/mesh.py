"""`stablekit mesh`: one image (or a prompt, drawn first) to a 3D mesh with TripoSR: coloured, textured, previewed."""

from __future__ import annotations

from enum import Enum
from typing import Annotated

import typer

from .options import (
    OUTPUT_PANEL,
    ComputeCapabilityOpt,
    DeviceOpt,
    DryRunOpt,
    DtypeOpt,
    JsonOpt,
    LockedOpt,
    ModelOpt,
    NoServerOpt,
    OffloadOpt,
    OutputDirOpt,
    OutputOpt,
    OverwriteOpt,
    PresetOpt,
    QuietOpt,
    VramOpt,
    complete_model,
    count_option,
    device_flags,
    expand_count,
    seed_option,
    submit,
    value,
)

EPILOG = """Examples:

  stablekit mesh --image chair.png                  (RGBA: the transparent background frames the object)

  stablekit mesh --image photo.jpg -o chair.obj     (RGB: background removed with rembg, if installed)

  stablekit mesh "a wooden chair, studio lighting, white background" --keep-image

  stablekit mesh --image chair.png --faces 5000 --texture 1024     (game-ready: GLB with a baked texture)

  stablekit mesh --image chair.png -o chair.obj --texture 1024     (chair.obj + chair.mtl + chair-texture.png)

  stablekit mesh --image chair.png --turntable chair.mp4           (and a video of it turning: .mp4 .gif .webp)

  stablekit mesh --image chair.png --model tiny-triposr      (offline smoke run)

  stablekit mesh --image chair.png --resolution 256 --dry-run (show the device plan)
"""

MESH_PANEL = "Mesh"
TURNTABLE_PANEL = "Turntable"


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
        "--keep-image", metavar="", help="Keep the image drawn from the prompt beside the mesh (.png).")] = False,
    remove_bg: Annotated[bool | None, typer.Option(
        "--remove-bg/--no-remove-bg", metavar="",
        help="Cut an RGB image's object out with rembg (optional dependency); "
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
    faces: Annotated[int | None, typer.Option(
        "--faces", rich_help_panel=MESH_PANEL,
        help="Simplify to about this many faces (quadric decimation; a closed mesh stays closed).  "
             "\\[default: all]")] = None,
    texture: Annotated[int | None, typer.Option(
        "--texture", rich_help_panel=MESH_PANEL,
        help="Bake a UV texture this many texels square (64-8192; .glb or .obj) instead of vertex colours.  "
             "\\[default: vertex colours]")] = None,
    turntable: Annotated[str | None, typer.Option(
        "--turntable", rich_help_panel=TURNTABLE_PANEL,
        help="Also write a video of the mesh turning: NAME.mp4, .gif or .webp (beside -o, in --output-dir).")] = None,
    turntable_views: Annotated[int | None, typer.Option(
        "--turntable-views", rich_help_panel=TURNTABLE_PANEL, help="Frames in one turn.  \\[default: 30]")] = None,
    turntable_size: Annotated[int | None, typer.Option(
        "--turntable-size", rich_help_panel=TURNTABLE_PANEL,
        help="Width and height of the video.  \\[default: 256]")] = None,
    count: count_option("meshes from a prompt (mesh i draws its image with seed+i)") = None,
    seed: seed_option("Text to 3D: the drawn image's seed (TripoSR itself draws nothing).") = None,
    model: ModelOpt = None,
    preset: PresetOpt = None,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    offload: OffloadOpt = None,
    vram: VramOpt = None,
    compute_capability: ComputeCapabilityOpt = None,
    output: OutputOpt = None,
    output_dir: OutputDirOpt = ".",
    overwrite: OverwriteOpt = False,
    no_metadata: Annotated[bool, typer.Option(
        "--no-metadata", rich_help_panel=OUTPUT_PANEL, metavar="",
        help="Embed no parameters in the mesh, texture or turntable (the sidecar stays).")] = False,
    json_output: JsonOpt = False,
    dry_run: DryRunOpt = False,
    quiet: QuietOpt = False,
    no_server: NoServerOpt = False,
    locked: LockedOpt = False,
) -> None:
    """Make a 3D mesh (GLB, OBJ, PLY or STL) from an image or a text prompt; optionally textured, with a preview."""
    from stablekit.errors import UsageError
    from stablekit.jobs import job_from

    if count and count > 1 and image:
        raise UsageError("--count with --image: the same image always gives the same mesh",
                         hint="give a prompt for several meshes, or several images through `stablekit batch`")

    values = {"prompt": prompt or "", "image": image, "image_model": image_model, "keep_image": keep_image or None,
              "remove_background": remove_bg, "foreground_ratio": foreground_ratio, "mc_resolution": resolution,
              "mc_threshold": threshold, "chunk_size": chunk_size, "output_format": value(output_format),
              "up": value(up), "face_count": faces, "texture_size": texture, "turntable": turntable,
              "turntable_views": turntable_views, "turntable_size": turntable_size, "seed": seed, "model": model,
              "metadata": False if no_metadata else None,
              "output": output, **device_flags(device, dtype, offload, vram)}
    jobs = expand_count(job_from("mesh", values, preset=preset), count, ctx.obj.note)
    submit(ctx, jobs, output_dir=output_dir, overwrite=overwrite,
           json_output=json_output, dry_run=dry_run,
           compute_capability=compute_capability, no_server=no_server, locked=locked)
