"""`stablekit reproduce`: run a file's recorded job again and, with --verify, say whether the result is the same."""

from __future__ import annotations

from typing import Annotated

import typer

from .options import DeviceOpt, DtypeOpt, QuietOpt, value

EPILOG = """Examples:

  stablekit reproduce lighthouse.png --verify          (exit 0 identical, 1 not, 2 no usable record)

  stablekit reproduce lighthouse.png -o again.png

  stablekit reproduce loop.flac --verify --dtype float32

Verdicts: identical bytes; identical pixels / samples / vertices (the metadata differs); or how far apart:
largest difference and PSNR (images, video frames), max sample difference (audio), Hausdorff distance
(meshes), first differing token (text) - with the recorded facts that explain a difference (device, dtype,
library versions, model revision).
"""


def reproduce(
    ctx: typer.Context,
    file: Annotated[str, typer.Argument(help="A file stablekit made (its record is embedded or in its sidecar).")],
    output: Annotated[str | None, typer.Option(
        "--output", "-o", help="Where to write the reproduction.  \\[default: NAME-reproduced.EXT here; "
                               "with --verify alone nothing is kept]")] = None,
    verify: Annotated[bool, typer.Option(
        "--verify", metavar="", help="Compare the reproduction with FILE and print a verdict.")] = False,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    json_output: Annotated[bool, typer.Option(
        "--json", metavar="", help="One JSON object: path, verdict and measures.")] = False,
    quiet: QuietOpt = False,
) -> None:
    """Run the job recorded in FILE again: same model, parameters and seed, on this machine's device plan."""
    from stablekit.reproduce import reproduce as run

    console = ctx.obj  # (-q is already applied: QuietOpt's callback)
    done = run(file, output=output, verify=verify, device=None if device in (None, "auto") else device,
               dtype=value(dtype), progress=console)
    if json_output:
        console.result(done.to_dict())
    else:
        if done.path is not None:
            console.result(str(done.path))
        for line in done.verdict.lines() if done.verdict else []:
            console.result(line)
    if done.verdict is not None and not done.verdict.identical:
        raise typer.Exit(1)
