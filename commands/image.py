"""`stablekit image`: text to image, img2img and inpainting with the Stable Diffusion families."""

from __future__ import annotations

from typing import Annotated

import typer

from .options import (
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
    default,
    device_flags,
    seed_option,
    submit,
    value,
    with_format,
)

INPUT_PANEL = "Input images, LoRA, refiner"

EPILOG = """Examples:

  stablekit image "a lighthouse at dusk"

  stablekit image "a lighthouse at dusk" --model tiny-sd        (offline smoke run)

  stablekit image "a fox in snow" -m sdxl-turbo -n 4 --seed 7 -o 'fox/{seed}.png'

  stablekit image "oil painting" --image photo.jpg --strength 0.6

  stablekit image "a red door" --image house.png --mask door-mask.png

  stablekit image --prompts-file prompts.txt -m sd-turbo -o 'batch/{index}-{prompt}.png'

  stablekit image "a castle" --model sd35-large --dry-run       (show the device plan)

  stablekit image "a castle" --model ~/models/dreamshaper.safetensors   (a single-file checkpoint)

Schedulers: euler, euler-trailing, euler-ancestral, euler-ancestral-trailing, heun, lms, ddim, ddim-trailing,
pndm, dpm++2m, dpm++2m-karras, dpm++2m-sde-karras, unipc (SD 1.x/2.x/XL); flow-euler, flow-heun (SD3).
"""


def complete_scheduler(incomplete: str) -> list[str]:
    from stablekit.schedulers import SAMPLERS

    return [name for name in SAMPLERS if name.startswith(incomplete)]


def image(
    ctx: typer.Context,
    prompt: Annotated[str | None, typer.Argument(help="What to draw (or use --prompts-file).")] = None,
    negative: Annotated[str | None, typer.Option("--negative", help="What to keep out of the image.")] = None,
    steps: Annotated[int | None, typer.Option("--steps", help="Denoising steps.  \\[default: the model's]")] = None,
    guidance: Annotated[float | None, typer.Option(
        "--guidance", help="Classifier-free guidance scale.  \\[default: the model's]")] = None,
    width: Annotated[int | None, typer.Option(
        "--width", help="Width in pixels.  \\[default: the model's, or the input image's]")] = None,
    height: Annotated[int | None, typer.Option(
        "--height", help="Height in pixels.  \\[default: the model's, or the input image's]")] = None,
    count: Annotated[int | None, typer.Option("--count", "-n",
        help="Images per prompt.  " + default("image", "num_images"))] = None,
    batch_size: Annotated[int | None, typer.Option(
        "--batch-size",
        help="Images rendered together (more memory, faster per image).  " + default("image", "batch_size"))] = None,
    scheduler: Annotated[str | None, typer.Option(
        "--scheduler", autocompletion=complete_scheduler,
        help="Sampler (list below).  \\[default: the model's]")] = None,
    prompts_file: Annotated[str | None, typer.Option(
        "--prompts-file", help="One prompt per line ('-' for stdin); the model is loaded once.")] = None,
    init_image: Annotated[str | None, typer.Option(
        "--image", "-i", rich_help_panel=INPUT_PANEL,
        help="Start from this image (img2img), or paint into it (--mask).")] = None,
    mask: Annotated[str | None, typer.Option(
        "--mask", rich_help_panel=INPUT_PANEL, help="Inpainting mask, the image's size: white is repainted.")] = None,
    strength: Annotated[float | None, typer.Option(
        "--strength", rich_help_panel=INPUT_PANEL,
        help="How much of --image to repaint, 0-1.  \\[default: 0.8; 1.0 with --mask]")] = None,
    lora: Annotated[list[str] | None, typer.Option(
        "--lora", rich_help_panel=INPUT_PANEL, help="LoRA file, folder or hub repo, with :SCALE; repeatable.")] = None,
    refiner: Annotated[bool, typer.Option(
        "--refiner", rich_help_panel=INPUT_PANEL, metavar="", help="Finish SDXL images with the refiner.")] = False,
    refiner_model: Annotated[str | None, typer.Option(
        "--refiner-model", rich_help_panel=INPUT_PANEL,
            help="Refiner to use.  " + default("image", "refiner_model"))] = None,
    refiner_split: Annotated[float | None, typer.Option(
        "--refiner-split", rich_help_panel=INPUT_PANEL,
        help="Fraction of the steps the base runs before the refiner.  " + default("image", "denoising_split"))] = None,
    family: Annotated[str | None, typer.Option(
        "--family", rich_help_panel=INPUT_PANEL,
        help="Architecture of a single-file --model checkpoint: sd15, sd21, sdxl, sd3.  \\[default: detected]")] = None,
    config: Annotated[str | None, typer.Option(
        "--config", rich_help_panel=INPUT_PANEL,
        help="Model whose configs a single-file checkpoint loads with.  \\[default: the family's]")] = None,
    seed: seed_option("Random seed; image i of the run uses seed+i.") = None,
    model: ModelOpt = None,
    preset: PresetOpt = None,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    offload: OffloadOpt = None,
    vram: VramOpt = None,
    compute_capability: ComputeCapabilityOpt = None,
    decoder: DecoderOpt = None,
    compile_: Annotated[bool, typer.Option(
        "--compile", rich_help_panel="Device",
        metavar="",
        help="torch.compile the denoiser: faster steps after a one-time compile (a minute or more; cached).")] = False,
    fast: Annotated[bool, typer.Option(
        "--fast", rich_help_panel="Device",
        metavar="", help="CUDA only: compile, channels_last and fused QKV projections (slower first image).")] = False,
    output: OutputOpt = None,
    output_dir: OutputDirOpt = ".",
    overwrite: OverwriteOpt = False,
    fmt: FormatOpt = None,
    no_metadata: Annotated[bool, typer.Option(
        "--no-metadata", rich_help_panel="Output",
        metavar="", help="Embed no parameters in the image (the sidecar stays).")] = False,
    json_output: JsonOpt = False,
    dry_run: DryRunOpt = False,
    quiet: QuietOpt = False,
    no_server: NoServerOpt = False,
    locked: LockedOpt = False,
) -> None:
    """Generate images from a text prompt, an input image, or both."""
    import sys

    from stablekit.errors import UsageError
    from stablekit.image_inputs import read_prompts
    from stablekit.jobs import job_from, with_seed

    if prompts_file and prompt:
        raise UsageError("give a prompt or --prompts-file, not both")
    if not prompts_file and prompt is None:
        raise UsageError("missing the prompt", hint='stablekit image "a lighthouse at dusk"')
    prompts = read_prompts(prompts_file, sys.stdin) if prompts_file else [prompt]
    values = {"prompt": prompts[0], "negative_prompt": negative, "num_inference_steps": steps,
              "guidance_scale": guidance, "width": width, "height": height, "num_images": count,
              "batch_size": batch_size, "seed": seed, "scheduler": scheduler, "image": init_image, "mask": mask,
              "strength": strength, "loras": lora or None, "refiner": refiner or None,
              "refiner_model": refiner_model, "denoising_split": refiner_split,
              "metadata": False if no_metadata else None, "model": model, "decoder": value(decoder),
              "compile": compile_ or None, "fast": fast or None,
              "output": with_format(output, fmt, ("png", "jpg", "jpeg", "webp")),
              **device_flags(device, dtype, offload, vram)}
    first = with_seed(job_from("image", values, preset=preset, family=family, config=config), ctx.obj.note)
    if not first.request.refiner and (refiner_model is not None or refiner_split is not None):
        unused = " and ".join(f for f, v in (("--refiner-model", refiner_model), ("--refiner-split", refiner_split))
                              if v is not None)
        raise UsageError(f"{unused} without --refiner would do nothing", hint=f"add --refiner, or drop {unused}")
    # A prompts file is one job per prompt; output n of the run uses seed + n, as in one job.
    per_prompt = first.request.num_images
    jobs = [first.with_request(prompt=text, seed=(first.seed + k * per_prompt) % 2**32)
            for k, text in enumerate(prompts)]
    submit(ctx, jobs, output_dir=output_dir, overwrite=overwrite, json_output=json_output, dry_run=dry_run,
           compute_capability=compute_capability,
           no_server=no_server, locked=locked, as_batch=prompts_file is not None)
