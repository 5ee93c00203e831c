"""`stablekit video`: an image (or a prompt, drawn first) to a short video with Stable Video Diffusion."""

from __future__ import annotations

from typing import Annotated

import typer

from .options import (
    DEVICE_PANEL,
    OUTPUT_PANEL,
    ComputeCapabilityOpt,
    DecoderOpt,
    DeviceOpt,
    DryRunOpt,
    DtypeOpt,
    FormatOpt,
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
    default,
    device_flags,
    expand_count,
    seed_option,
    submit,
    value,
    with_format,
)

MOTION_PANEL = "Motion"

EPILOG = """Examples:

  stablekit video --image boat.png                              (svd-xt: 25 frames at 1024x576, boat-SEED.mp4)

  stablekit video --image boat.png --model tiny-svd             (offline smoke run)

  stablekit video --image boat.png -o boat.gif --frames 14 --fps 7 --motion 180

  stablekit video "a sailing boat on a stormy sea" --keep-image -o boat.mp4

  stablekit video --image boat.png -o frames/                   (a folder of numbered PNG frames)

  stablekit video --image boat.png --dry-run                    (show the device plan: offload, decode chunks)

Formats by the extension of -o: .mp4 (H.264), .gif, .webp (animated); no extension: a folder of PNG frames.
The input image is scaled to cover the video's size and centre-cropped.
"""


def video(
    ctx: typer.Context,
    prompt: Annotated[str | None, typer.Argument(
        help="Text to video: what the image model draws as the first frame.")] = None,
    image: Annotated[str | None, typer.Option(
        "--image", "-i", help="Image to video: the first frame (scaled to cover the size, centre-cropped).")] = None,
    image_model: Annotated[str | None, typer.Option(
        "--image-model", autocompletion=complete_model,
        help="Image model that draws a prompt's first frame.  " + default("video", "image_model"))] = None,
    keep_image: Annotated[bool, typer.Option(
        "--keep-image", metavar="",
        help="Keep the first frame drawn from the prompt beside the video (.png).")] = False,
    frames: Annotated[int | None, typer.Option(
        "--frames", help="Number of frames.  \\[default: the model's]")] = None,
    fps: Annotated[int | None, typer.Option(
        "--fps", help="Frames per second: the motion conditioning and the file's rate.  "
                      "\\[default: the model's]")] = None,
    width: Annotated[int | None, typer.Option(
        "--width", help="Width in pixels, a multiple of 8.  \\[default: the model's]")] = None,
    height: Annotated[int | None, typer.Option(
        "--height", help="Height in pixels, a multiple of 8.  \\[default: the model's]")] = None,
    steps: Annotated[int | None, typer.Option("--steps", help="Denoising steps.  \\[default: the model's]")] = None,
    motion: Annotated[int | None, typer.Option(
        "--motion", rich_help_panel=MOTION_PANEL,
        help="Motion bucket: more is more movement.  " + default("video", "motion_bucket_id"))] = None,
    noise_aug: Annotated[float | None, typer.Option(
        "--noise-aug", rich_help_panel=MOTION_PANEL,
        help="Noise added to the first frame: more strays further from it.  "
             + default("video", "noise_aug_strength"))] = None,
    min_guidance: Annotated[float | None, typer.Option(
        "--min-guidance", rich_help_panel=MOTION_PANEL,
        help="Guidance of the first frame, rising to --max-guidance at the last.  "
             + default("video", "min_guidance_scale"))] = None,
    max_guidance: Annotated[float | None, typer.Option(
        "--max-guidance", rich_help_panel=MOTION_PANEL,
        help="Guidance of the last frame.  " + default("video", "max_guidance_scale"))] = None,
    decode_chunk: Annotated[int | None, typer.Option(
        "--decode-chunk", rich_help_panel=DEVICE_PANEL,
        help="Frames decoded at a time (fewer: less memory).  \\[default: the device plan's]")] = None,
    count: count_option("videos (video i uses seed+i, its own first frame from a prompt)") = None,
    seed: seed_option("The video's noise (and a prompt's first frame's).") = None,
    model: ModelOpt = None,
    preset: PresetOpt = None,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    offload: OffloadOpt = None,
    vram: VramOpt = None,
    compute_capability: ComputeCapabilityOpt = None,
    decoder: DecoderOpt = None,
    output: OutputOpt = None,
    output_dir: OutputDirOpt = ".",
    overwrite: OverwriteOpt = False,
    fmt: FormatOpt = None,
    no_metadata: Annotated[bool, typer.Option(
        "--no-metadata", rich_help_panel=OUTPUT_PANEL,
        metavar="", help="Embed no parameters in the video (the sidecar stays).")] = False,
    json_output: JsonOpt = False,
    dry_run: DryRunOpt = False,
    quiet: QuietOpt = False,
    no_server: NoServerOpt = False,
    locked: LockedOpt = False,
) -> None:
    """Make a video (MP4, GIF, WebP or PNG frames) from an image or a text prompt."""
    from stablekit.jobs import job_from

    values = {"prompt": prompt or "", "image": image, "image_model": image_model, "keep_image": keep_image or None,
              "num_frames": frames, "fps": fps, "width": width, "height": height, "num_inference_steps": steps,
              "motion_bucket_id": motion, "noise_aug_strength": noise_aug, "min_guidance_scale": min_guidance,
              "max_guidance_scale": max_guidance, "decode_chunk_size": decode_chunk, "seed": seed,
              "decoder": value(decoder),
              "metadata": False if no_metadata else None, "model": model,
              "output": with_format(output, fmt, ("mp4", "gif", "webp", "frames"), "" if fmt == "frames" else None),
              **device_flags(device, dtype, offload, vram)}
    jobs = expand_count(job_from("video", values, preset=preset), count, ctx.obj.note)
    submit(ctx, jobs, output_dir=output_dir, overwrite=overwrite,
           json_output=json_output, dry_run=dry_run,
           compute_capability=compute_capability, no_server=no_server, locked=locked)
