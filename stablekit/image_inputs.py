"""Input images for img2img and inpainting: read, validated and sized by one documented rule.

- Modes: RGB as is; RGBA/LA/P with transparency are composited onto white; L, CMYK, YCbCr are converted to
  RGB. 16-bit and floating-point images (modes I, I;16, F) are refused: converting them loses data silently.
- Size: without --width/--height the output keeps the input's size, rounded down to the model's size multiple
  (the remainder is cropped evenly from both sides). With --width/--height the input is scaled to cover that
  size and centre-cropped to it. The rule that fired is reported.
- Masks: the same size as the image, white = repaint, black = keep; scaled and cropped with the image.
"""

from __future__ import annotations

from pathlib import Path

from .errors import InputError

_REFUSED_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")


def load_image(path: str, flag: str = "--image"):
    """An RGB PIL image from a file, or an InputError that names the flag and the problem."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    file = Path(path).expanduser()
    if not file.is_file():
        raise InputError(f"{flag} {path}: no such file")
    try:
        with Image.open(file) as opened:
            opened.load()
            image = ImageOps.exif_transpose(opened)
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise InputError(f"{flag} {path}: not a readable image ({err.__class__.__name__})") from None
    if image.mode in _REFUSED_MODES:
        raise InputError(f"{flag} {path}: {image.mode} images (16-bit or float) are not supported",
                         hint="save it as 8-bit RGB")
    return image


def to_rgb(image):
    from PIL import Image

    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA"):
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, image.convert("RGBA")).convert("RGB")
    return image.convert("RGB")


def to_mask(image):
    return image.convert("L")


def target_size(image_size: tuple[int, int], width: int | None, height: int | None,
                multiple: int) -> tuple[int, int, str]:
    """The output size for an input image, and the rule that chose it."""
    if width and height:
        return width, height, (f"input {image_size[0]}x{image_size[1]} scaled to cover {width}x{height} "
                               "and centre-cropped")
    w, h = image_size[0] // multiple * multiple, image_size[1] // multiple * multiple
    if w == 0 or h == 0:
        raise InputError(f"the input image is {image_size[0]}x{image_size[1]}: smaller than {multiple} pixels")
    if (w, h) == image_size:
        return w, h, f"output {w}x{h}: the input's size"
    return w, h, f"output {w}x{h}: the input's {image_size[0]}x{image_size[1]} cropped to a multiple of {multiple}"


def cover(image, width: int, height: int):
    """Scale to cover width x height, then centre-crop to exactly that (no distortion)."""
    from PIL import Image

    scale = max(width / image.width, height / image.height)
    if scale != 1:
        size = (max(width, round(image.width * scale)), max(height, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.LANCZOS)
    left, top = (image.width - width) // 2, (image.height - height) // 2
    return image.crop((left, top, left + width, top + height))


def read_inputs(image_path: str, mask_path: str | None, width: int | None, height: int | None, multiple: int):
    """(image, mask or None, width, height, rule) ready for the pipeline."""
    image = load_image(image_path, "--image")
    mask = load_image(mask_path, "--mask") if mask_path else None
    if mask is not None and mask.size != image.size:
        raise InputError(f"--mask is {mask.size[0]}x{mask.size[1]} but --image is {image.size[0]}x{image.size[1]}",
                         hint="the mask must have the image's size")
    w, h, rule = target_size(image.size, width, height, multiple)
    image = cover(to_rgb(image), w, h)
    if mask is not None:
        mask = cover(to_mask(mask), w, h)
    return image, mask, w, h, rule


def read_prompts(source: str, stdin) -> list[str]:
    """One prompt per line from a file or `-` (stdin); blank lines and lines starting with # are skipped."""
    if source == "-":
        text = stdin.read()
    else:
        file = Path(source).expanduser()
        if not file.is_file():
            raise InputError(f"--prompts-file {source}: no such file")
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise InputError(f"--prompts-file {source}: cannot read it ({err.__class__.__name__})") from None
    prompts = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if not prompts:
        raise InputError(f"--prompts-file {source}: no prompts in it")
    return prompts
