"""Still images: PNG, JPEG, WebP, with the generation parameters embedded where the format allows.

PNG gets AUTOMATIC1111's `parameters` text chunk (what image browsers and sharing sites read) and
stablekit's own JSON in an iTXt chunk. JPEG and WebP get the same two in EXIF: the parameters in
UserComment (where A1111 puts them: type UNDEFINED, `UNICODE\\0` + UTF-16) and the JSON in ImageDescription,
in a minimal EXIF block built here byte by byte (exif_block). No timestamps: the same inputs give the same
bytes.
"""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path
from typing import Any

from ..outputs import write_atomic

EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp")
_EXIF_IFD, _USER_COMMENT, _IMAGE_DESCRIPTION = 0x8769, 0x9286, 0x010E

# A1111's own key/value pattern (modules/infotext_utils.py, re_param_code): what its readers split the last
# line with. A value is written bare only when this pattern reads it back unchanged; otherwise JSON-quoted.
A1111_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')


def a1111_quote(value: Any) -> str:
    """A field value as A1111's quote() writes it: JSON-quoted when it holds `,` `:` a newline (or `"`)."""
    text = str(value)
    if any(c in text for c in ',:\n"'):
        return json.dumps(text, ensure_ascii=False)
    return text


def a1111_parameters(p: dict[str, Any]) -> str:
    """The `parameters` text in AUTOMATIC1111's layout: prompt, negative prompt, then key: value pairs.

    Keys and sampler names are A1111's (Sampler "Euler a" / "PLMS", "Schedule type", "Refiner", "Refiner
    switch at"), so A1111 and the readers written for it fill in the same fields.
    """
    from ..schedulers import a1111_fields

    lines = [p["prompt"]]
    if p.get("negative_prompt"):
        lines.append(f"Negative prompt: {p['negative_prompt']}")
    sampler, schedule = a1111_fields(p.get("sampler"))
    loras = ", ".join(f"{lora['name']}: {lora['scale']:g}" for lora in p.get("loras") or [])
    fields = [("Steps", p.get("num_inference_steps")), ("Sampler", sampler), ("Schedule type", schedule),
              ("CFG scale", p.get("guidance_scale")), ("Seed", p.get("seed")),
              ("Size", f"{p.get('width')}x{p.get('height')}"), ("Model", p.get("model")),
              ("Denoising strength", p.get("strength")),
              ("Refiner", p.get("refiner_model")), ("Refiner switch at", p.get("denoising_split")),
              ("Lora", loras or None),
              ("Version", f"stablekit {p.get('stablekit_version', '')}".strip())]
    lines.append(", ".join(f"{key}: {a1111_quote(value)}" for key, value in fields if value not in (None, "")))
    return "\n".join(lines)


# EXIF field types (EXIF 2.32, section 4.6.2) and the tags written.
_ASCII, _SHORT, _LONG, _RATIONAL, _UNDEFINED = 2, 3, 4, 5, 7
_SIZES = {_ASCII: 1, _SHORT: 2, _LONG: 4, _RATIONAL: 8, _UNDEFINED: 1}


def user_comment(text: str) -> bytes:
    """An EXIF UserComment value: the 8-byte character code, then the text (UTF-16 big-endian, as A1111)."""
    return b"UNICODE\0" + text.encode("utf-16-be")


def exif_block(*, description: str | None = None, comment: str | None = None, software: str | None = None,
               size: tuple[int, int] | None = None) -> bytes:
    """A minimal valid EXIF block, starting with its TIFF header (big-endian `MM\\0*`, what A1111's piexif
    writes): IFD0 with ImageDescription (ASCII), Software, the resolution tags and the ExifIFD pointer; the
    Exif IFD with ExifVersion, ColorSpace, the pixel size and UserComment (UNDEFINED, character-code prefix).

    JPEG wants `Exif\\0\\0` before it (jpeg_exif()); WebP's EXIF chunk holds it as it is.
    """
    ifd0: list[tuple[int, int, Any]] = [
        (0x011A, _RATIONAL, [(72, 1)]), (0x011B, _RATIONAL, [(72, 1)]), (0x0128, _SHORT, [2]),
    ]
    if description is not None:
        ifd0.append((_IMAGE_DESCRIPTION, _ASCII, description))
    if software is not None:
        ifd0.append((0x0131, _ASCII, software))
    exif: list[tuple[int, int, Any]] = [(0x9000, _UNDEFINED, b"0232"), (0xA000, _UNDEFINED, b"0100"),
                                        (0xA001, _SHORT, [1])]
    if size is not None:
        exif += [(0xA002, _LONG, [size[0]]), (0xA003, _LONG, [size[1]])]
    if comment is not None:
        exif.append((_USER_COMMENT, _UNDEFINED, user_comment(comment)))
    ifd0.append((_EXIF_IFD, _LONG, [0]))  # offset filled in below
    ifd0.sort(key=lambda entry: entry[0])
    exif.sort(key=lambda entry: entry[0])

    def payload(kind: int, value: Any) -> tuple[int, bytes]:
        if kind == _ASCII:
            data = value.encode("ascii", errors="backslashreplace") + b"\0"
            return len(data), data
        if kind == _UNDEFINED:
            return len(value), bytes(value)
        if kind == _SHORT:
            return len(value), b"".join(struct.pack(">H", v) for v in value)
        if kind == _LONG:
            return len(value), b"".join(struct.pack(">I", v) for v in value)
        return len(value), b"".join(struct.pack(">II", *v) for v in value)

    def ifd_size(entries) -> int:
        return 2 + 12 * len(entries) + 4

    exif_offset = 8 + ifd_size(ifd0)
    data_offset = exif_offset + ifd_size(exif)
    data = bytearray()

    def write_ifd(entries) -> bytes:
        out = bytearray(struct.pack(">H", len(entries)))
        for tag, kind, value in entries:
            if tag == _EXIF_IFD:
                value = [exif_offset]
            count, raw = payload(kind, value)
            if len(raw) <= 4:
                field = raw.ljust(4, b"\0")
            else:
                field = struct.pack(">I", data_offset + len(data))
                data.extend(raw)
                if len(data) % 2:  # values start on word boundaries
                    data.append(0)
            out += struct.pack(">HHI", tag, kind, count) + field
        return bytes(out + struct.pack(">I", 0))  # no next IFD

    first, second = write_ifd(ifd0), write_ifd(exif)
    return b"MM\0*" + struct.pack(">I", 8) + first + second + bytes(data)


def _exif(parameters: dict[str, Any], size: tuple[int, int]) -> bytes:
    return exif_block(description=json.dumps(parameters, sort_keys=True, default=str),
                      comment=a1111_parameters(parameters),
                      software=f"stablekit {parameters.get('stablekit_version', '')}".strip(), size=size)


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
    jpeg = suffix in (".jpg", ".jpeg")
    if parameters is not None:
        block = _exif(parameters, image.size)
        kwargs["exif"] = b"Exif\0\0" + block if jpeg else block  # JPEG's APP1 names itself; WebP's chunk does not
    image.save(tmp, format="JPEG" if jpeg else "WEBP", **kwargs)


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
    if isinstance(raw, bytes) and raw.startswith(b"ASCII\0\0\0"):
        return raw[8:].decode("ascii", errors="replace")
    return None
