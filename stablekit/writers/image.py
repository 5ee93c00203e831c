"""Still images: PNG, JPEG, WebP, with the generation parameters embedded where the format allows.

PNG gets AUTOMATIC1111's `parameters` text chunk (what image browsers and sharing sites read) and
stablekit's own JSON in an iTXt chunk. JPEG and WebP get the same two in EXIF: the parameters in
UserComment (where A1111 puts them) and the JSON in ImageDescription. No timestamps: the same inputs give
the same bytes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..outputs import write_atomic

EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp")
_EXIF_IFD, _USER_COMMENT, _IMAGE_DESCRIPTION = 0x8769, 0x9286, 0x010E


def a1111_parameters(p: dict[str, Any]) -> str:
    """The `parameters` text in AUTOMATIC1111's layout: prompt, negative prompt, then key: value pairs."""
    lines = [p["prompt"]]
    if p.get("negative_prompt"):
        lines.append(f"Negative prompt: {p['negative_prompt']}")
    loras = ", ".join(f"{lora['name']}: {lora['scale']:g}" for lora in p.get("loras") or [])
    fields = [("Steps", p.get("num_inference_steps")), ("Sampler", p.get("sampler")),
              ("CFG scale", p.get("guidance_scale")), ("Seed", p.get("seed")),
              ("Size", f"{p.get('width')}x{p.get('height')}"), ("Model", p.get("model")),
              ("Denoising strength", p.get("strength")), ("Lora", loras or None),
              ("Version", f"stablekit {p.get('stablekit_version', '')}".strip())]
    lines.append(", ".join(f"{key}: {value}" for key, value in fields if value not in (None, "")))
    return "\n".join(lines)


def _exif(parameters: dict[str, Any]):
    from PIL import Image

    exif = Image.Exif()
    exif[_IMAGE_DESCRIPTION] = json.dumps(parameters, sort_keys=True, default=str)
    exif.get_ifd(_EXIF_IFD)[_USER_COMMENT] = b"UNICODE\0" + a1111_parameters(parameters).encode("utf-16-be")
    return exif


def _save(image, tmp: Path, suffix: str, parameters: dict[str, Any] | None) -> None:
    if suffix == ".png":
        from PIL.PngImagePlugin import PngInfo

        info = None
        if parameters is not None:
            info = PngInfo()
            info.add_text("parameters", a1111_parameters(parameters))
            info.add_itxt("stablekit", json.dumps(parameters, sort_keys=True, default=str))
        image.save(tmp, format="PNG", pnginfo=info)
        return
    kwargs: dict[str, Any] = {"quality": 95}
    if parameters is not None:
        kwargs["exif"] = _exif(parameters)
    image.save(tmp, format="JPEG" if suffix in (".jpg", ".jpeg") else "WEBP", **kwargs)


def write_image(image, path: Path, parameters: dict[str, Any] | None, *, overwrite: bool = False) -> Path:
    """Save a PIL image in the format its extension names; with `parameters`, embed them."""
    suffix = path.suffix.lower()
    if suffix not in EXTENSIONS:
        raise ValueError(f"unsupported image format {suffix}")
    return write_atomic(path, lambda tmp: _save(image, tmp, suffix, parameters), overwrite=overwrite)


def read_parameters(path: Path) -> str | None:
    """The A1111 parameters text embedded in an image (PNG chunk or EXIF UserComment), if any."""
    from PIL import Image

    with Image.open(path) as image:
        if "parameters" in image.info:
            return image.info["parameters"]
        raw = image.getexif().get_ifd(_EXIF_IFD).get(_USER_COMMENT)
    if isinstance(raw, bytes) and raw.startswith(b"UNICODE\0"):
        return raw[8:].decode("utf-16-be")
    return None
