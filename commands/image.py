"""`stablekit image`: text to image with the Stable Diffusion families."""

from __future__ import annotations

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
    device_flags,
)

EPILOG = """Examples:

  stablekit image "a lighthouse at dusk"

  stablekit image "a lighthouse at dusk" --model tiny-sd        (offline smoke run)

  stablekit image "a fox in snow" -m sdxl-turbo -n 4 --seed 7 -o 'fox/{seed}.png'

  stablekit image "a castle" --model sd35-large --dry-run       (show the device plan)
"""


def image(
    ctx: typer.Context,
    prompt: Annotated[str, typer.Argument(help="What to draw.")],
    negative: Annotated[str | None, typer.Option("--negative", help="What to keep out of the image.")] = None,
    steps: Annotated[int | None, typer.Option("--steps", help="Denoising steps.  [default: the model's]")] = None,
    guidance: Annotated[float | None, typer.Option(
        "--guidance", help="Classifier-free guidance scale.  [default: the model's]")] = None,
    width: Annotated[int | None, typer.Option("--width", help="Width in pixels.  [default: the model's]")] = None,
    height: Annotated[int | None, typer.Option("--height", help="Height in pixels.  [default: the model's]")] = None,
    count: Annotated[int | None, typer.Option("--count", "-n", help="How many images.  [default: 1]")] = None,
    batch_size: Annotated[int | None, typer.Option(
        "--batch-size", help="Images rendered together (more memory, faster per image).  [default: 1]")] = None,
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
    """Generate images from a text prompt."""
    from stablekit import planning, requests
    from stablekit.engines import image as engine
    from stablekit.outputs import OutputOptions, check_template
    from stablekit.preset_files import load_preset
    from stablekit.registry import load_registry

    console = ctx.obj
    console.quiet = console.quiet or quiet
    preset_values = load_preset(preset, "image").values if preset else {}
    model_name = model or preset_values.get("model") or requests.ImageRequest.model
    spec = load_registry().resolve(model_name, "image")
    flags = {"model": model_name, "negative_prompt": negative, "num_inference_steps": steps,
             "guidance_scale": guidance, "width": width, "height": height, "num_images": count,
             "batch_size": batch_size, "seed": seed, **device_flags(device, dtype, offload, vram)}
    request = requests.resolve("image", prompt=prompt, flags=flags, preset=preset_values,
                               model_defaults=spec.defaults)
    engine.validate(request, spec)
    options = OutputOptions(output=output, output_dir=output_dir, overwrite=overwrite)
    check_template(options, engine.EXTENSIONS)
    prepared = planning.prepare(spec, engine.workload(request), planning.overrides_of(request))
    if dry_run:
        console.show_plan(planning.describe(prepared, request), json_output)
        return
    console.show_plan_summary(prepared.plan)
    engine.generate(prepared, request, options, console,
                    on_output=lambda item: console.result(item if json_output else item["path"]))
