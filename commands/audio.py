"""`stablekit audio`: text to sound effects and music with Stable Audio Open."""

from __future__ import annotations

from enum import Enum
from typing import Annotated

import typer

from .options import (
    OUTPUT_PANEL,
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
    device_flags,
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
                        "model's maximum.  \\[default: 0]")] = None,
    negative: Annotated[str | None, typer.Option(
        "--negative", help="What to keep out of the sound; '' for nothing.  \\[default: the model's recommended "
                           "one]")] = None,
    steps: Annotated[int | None, typer.Option("--steps", help="Denoising steps.  \\[default: the model's]")] = None,
    guidance: Annotated[float | None, typer.Option(
        "--guidance", help="Classifier-free guidance scale.  \\[default: the model's]")] = None,
    count: Annotated[int | None, typer.Option("--count", "-n", help="How many waveforms.  \\[default: 1]")] = None,
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
    bit_depth: Annotated[BitDepth | None, typer.Option(
        "--bit-depth", rich_help_panel=OUTPUT_PANEL,
        help="Sample format of .wav (16, 24, 32f) and .flac (16, 24).  \\[default: 16]")] = None,
    normalize: Annotated[bool, typer.Option(
        "--normalize/--no-normalize", rich_help_panel=OUTPUT_PANEL,
        help="Lower a clip that peaks beyond full scale to full scale, or clip the samples beyond it.")] = True,
    json_output: JsonOpt = False,
    dry_run: DryRunOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Generate sound effects and music from a text prompt (WAV, FLAC or OGG)."""
    from stablekit import planning
    from stablekit.engines import audio as engine
    from stablekit.outputs import OutputOptions, check_template

    console = ctx.obj
    console.quiet = console.quiet or quiet
    flags = {"negative_prompt": negative, "num_inference_steps": steps,
             "guidance_scale": guidance, "num_waveforms_per_prompt": count, "seed": seed,
             **device_flags(device, dtype, offload, vram)}
    spec, request = planning.resolve_request("audio", prompt=prompt, model=model, preset=preset, flags=flags)
    request = engine.with_length(request, seconds=seconds, start=start)
    engine.validate(request, spec)
    options = OutputOptions(output=output, output_dir=output_dir, overwrite=overwrite)
    check_template(options, engine.EXTENSIONS)
    fmt = engine.output_format(options, bit_depth.value if bit_depth else None, normalize)
    prepared = planning.prepare(spec, engine.workload(request), planning.overrides_of(request))
    if dry_run:
        console.show_plan(planning.describe(prepared, request), json_output)
        return
    console.show_plan_summary(prepared.plan)
    engine.generate(prepared, request, options, console, fmt=fmt,
                    on_output=lambda item: console.result(item if json_output else item["path"]))
