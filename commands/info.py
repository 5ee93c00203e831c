"""`stablekit info`: what made a file (stablekit's record, AUTOMATIC1111's or ComfyUI's), no model loaded."""

from __future__ import annotations

from typing import Annotated

import typer

EPILOG = """Examples:

  stablekit info lighthouse.png

  stablekit info renders/*.png --json > jobs.jsonl        (one job object per line: a batch file)

  stablekit info download-from-civitai.png               (A1111 or ComfyUI metadata, shown)

Read from: PNG/JPEG/WebP/GIF/MP4/WAV/FLAC/OGG/GLB metadata, else the NAME.EXT.json sidecar (OBJ, PLY, STL,
text, frame folders). A file with no record exits 1.
"""


def info(
    ctx: typer.Context,
    files: Annotated[list[str], typer.Argument(help="Files (or frame folders) to read.")],
    json_output: Annotated[bool, typer.Option(
        "--json", metavar="",
        help="Print the job object that made each file (for A1111 files, the nearest job).")] = False,
) -> None:
    """Show what made a file: model, prompt, seed and every setting, without loading a model."""
    from stablekit.info import report

    report(files, as_json=json_output, result=ctx.obj.result, warn=ctx.obj.warn)
