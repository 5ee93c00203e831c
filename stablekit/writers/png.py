"""PNG images with their generation parameters embedded (A1111 `parameters` chunk + stablekit JSON)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from PIL.PngImagePlugin import PngInfo

from ..outputs import write_atomic


def a1111_parameters(p: dict[str, Any]) -> str:
    """The `parameters` text that image browsers and sharing sites read (AUTOMATIC1111's layout)."""
    lines = [p["prompt"]]
    if p.get("negative_prompt"):
        lines.append(f"Negative prompt: {p['negative_prompt']}")
    fields = [("Steps", p.get("num_inference_steps")), ("Sampler", p.get("scheduler")),
              ("CFG scale", p.get("guidance_scale")), ("Seed", p.get("seed")),
              ("Size", f"{p.get('width')}x{p.get('height')}"), ("Model", p.get("model")),
              ("Version", f"stablekit {p.get('stablekit_version', '')}".strip())]
    lines.append(", ".join(f"{key}: {value}" for key, value in fields if value not in (None, "")))
    return "\n".join(lines)


def write_png(image, path: Path, parameters: dict[str, Any] | None, *, overwrite: bool = False) -> Path:
    """Save a PIL image; with `parameters`, embed them (same inputs give the same bytes: no timestamps)."""
    info = None
    if parameters is not None:
        info = PngInfo()
        info.add_text("parameters", a1111_parameters(parameters))
        info.add_itxt("stablekit", json.dumps(parameters, sort_keys=True, default=str))
    return write_atomic(path, lambda tmp: image.save(tmp, format="PNG", pnginfo=info), overwrite=overwrite)
