"""`stablekit audio`: text to sound effects and music with Stable Audio Open."""

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
    default,
    device_flags,
    seed_option,
    submit,
    with_format,
)

EPILOG = """Examples:

  stablekit audio "rain on a tin roof, distant thunder"

  stablekit audio "128 BPM tech house drum loop" --seconds 30 -o loop.flac

  stablekit audio "a dog barks" --model tiny-audio              (offline smoke run)

  stablekit audio "glass shatters" -n 3 --seed 7 -o 'sfx/{seed}.wav' --bit-depth 24

Formats by extension: .wav (16-bit; --bit-depth 24 or 32f), .flac (16 or 24-bit), .ogg (Vorbis).
A clip whose peak exceeds full scale is lowered as a whole to full scale; --no-normalize clips it instead.
"""


class BitDepth(str, Enum):
    pcm16 = "16"
    pcm24 = "24"
    float32 = "32f"


def audio(
    ctx: typer.Context,
    prompt: Annotated[str, typer.Argument(help="The sound to make.")],
    seconds: Annotated[float | None, typer.Option(
        "--seconds", help="Length in seconds, up to the model's maximum (47.55 s for Stable Audio Open).  "
                                "\\[default: the model's, 10 s]")] = None,
    start: Annotated[float | None, typer.Option(
        "--start", help="Where the clip starts in the piece, in seconds; it ends at START + SECONDS, within the "
                        "model's maximum.  " + default("audio", "audio_start_in_s"))] = None,
    negative: Annotated[str | None, typer.Option(
        "--negative", help="What to keep out of the sound; '' for nothing.  \\[default: the model's recommended "
                           "one]")] = None,
    steps: Annotated[int | None, typer.Option("--steps", help="Denoising steps.  \\[default: the model's]")] = None,
    guidance: Annotated[float | None, typer.Option(
        "--guidance", help="Classifier-free guidance scale.  \\[default: the model's]")] = None,
    count: Annotated[int | None, typer.Option("--count", "-n",
        help="How many waveforms.  " + default("audio", "num_waveforms_per_prompt"))] = None,
    seed: seed_option("Random seed; waveform i uses seed+i.") = None,
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
    bit_depth: Annotated[BitDepth | None, typer.Option(
        "--bit-depth", rich_help_panel=OUTPUT_PANEL,
        help="Sample format of .wav (16, 24, 32f) and .flac (16, 24).  \\[default: the format's 16-bit]")] = None,
    normalize: Annotated[bool, typer.Option(
        "--normalize/--no-normalize", rich_help_panel=OUTPUT_PANEL,
        metavar="",
        help="Lower a clip that peaks beyond full scale to full scale, or clip the samples beyond it.")] = True,
    fmt: FormatOpt = None,
    no_metadata: Annotated[bool, typer.Option(
        "--no-metadata", rich_help_panel=OUTPUT_PANEL,
        metavar="", help="Write no tags (title, software, parameters) into the file; the sidecar stays.")] = False,
    json_output: JsonOpt = False,
    dry_run: DryRunOpt = False,
    quiet: QuietOpt = False,
    no_server: NoServerOpt = False,
    locked: LockedOpt = False,
) -> None:
    """Generate sound effects and music from a text prompt (WAV, FLAC or OGG)."""
    from stablekit.engines.audio import with_length
    from stablekit.jobs import job_from

    values = {"prompt": prompt, "negative_prompt": negative, "num_inference_steps": steps,
              "guidance_scale": guidance, "num_waveforms_per_prompt": count, "seed": seed,
              "bit_depth": bit_depth.value if bit_depth else None, "normalize": None if normalize else False,
              "metadata": False if no_metadata else None, "model": model,
              "output": with_format(output, fmt, ("wav", "flac", "ogg")),
              **device_flags(device, dtype, offload, vram)}
    job = job_from("audio", values, preset=preset)
    job = job.with_request(**vars(with_length(job.request, seconds=seconds, start=start)))
    submit(ctx, [job], output_dir=output_dir, overwrite=overwrite, json_output=json_output, dry_run=dry_run,
           compute_capability=compute_capability,
           no_server=no_server, locked=locked)
