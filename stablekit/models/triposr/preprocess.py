"""Input images as TripoSR expects them: object framed by its alpha, composited on gray, resized for the ViT."""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

if TYPE_CHECKING:
    import torch

from ...errors import InputError, StablekitError

FOREGROUND_RATIO = 0.85
BACKGROUND_GRAY = 0.5
REMBG_MODEL = "u2net"  # MIT-licensed; rembg's current default (BRIA RMBG-2.0) is non-commercial


def as_rgb_or_rgba(image: Image.Image) -> Image.Image:
    """RGBA when the file carries transparency (alpha channel or a transparent palette entry), else RGB."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode in ("P", "L", "RGB") and "transparency" in image.info):
        return image.convert("RGBA")
    return image.convert("RGB")


def has_transparency(image: Image.Image) -> bool:
    """What the official code checks before removing the background: RGBA with any alpha below 255."""
    return image.mode == "RGBA" and image.getextrema()[3][0] < 255


def background_remover_available() -> bool:
    """rembg with an onnxruntime, found without importing them (rembg exits the process when the runtime is missing)."""
    return all(importlib.util.find_spec(name) is not None for name in ("rembg", "onnxruntime"))


def remove_background(image: Image.Image) -> Image.Image:
    """The object cut out by rembg's u2net model (rembg downloads it on first use into ~/.u2net)."""
    try:
        import rembg
    except (ImportError, SystemExit):  # rembg calls sys.exit(1) when onnxruntime is missing
        raise StablekitError("background removal needs rembg with onnxruntime",
                             hint="pip install 'stablekit[rembg]'; or pass --no-remove-bg; or give an RGBA image",
                             ) from None
    session = rembg.new_session(REMBG_MODEL)
    return rembg.remove(image.convert("RGB"), session=session).convert("RGBA")


def resize_foreground(rgba: np.ndarray, ratio: float = FOREGROUND_RATIO) -> np.ndarray:
    """Crop to the alpha > 0 box, pad to a centred square, then pad so the object fills `ratio` of the side.

    As the official code: the crop excludes the box's last row and column, nothing is resampled.
    """
    rows, cols = np.nonzero(rgba[..., 3] > 0)
    if rows.size == 0:
        raise InputError("the image is fully transparent: there is no object to reconstruct")
    crop = rgba[rows.min():rows.max(), cols.min():cols.max()]
    size = max(crop.shape[0], crop.shape[1])
    if size == 0:
        raise InputError("the visible part of the image is a single row or column of pixels")
    square = _pad_centred(crop, size)
    return _pad_centred(square, int(size / ratio))


def _pad_centred(image: np.ndarray, side: int) -> np.ndarray:
    height, width = image.shape[:2]
    top, left = (side - height) // 2, (side - width) // 2
    return np.pad(image, ((top, side - height - top), (left, side - width - left), (0, 0)))


def composite_gray(rgba: np.ndarray, gray: float = BACKGROUND_GRAY) -> np.ndarray:
    """rgb * a + gray * (1 - a) in float32, truncated back to uint8 (so the background is 127)."""
    values = rgba.astype(np.float32) / 255.0
    alpha = values[..., 3:4]
    rgb = values[..., :3] * alpha + (1 - alpha) * gray
    return (rgb * 255.0).astype(np.uint8)


def prepare(image: Image.Image, *, remove_bg: bool,
            foreground_ratio: float = FOREGROUND_RATIO) -> tuple[np.ndarray, str]:
    """The uint8 RGB array the model sees, and what was done to get it (for the record).

    RGBA with transparency: framed by its alpha and composited on gray. Otherwise, with `remove_bg`, rembg
    cuts the object out first; without, the image is used as it is (it should already be framed on gray).
    """
    image = as_rgb_or_rgba(image)
    if has_transparency(image):
        how = "alpha"
    elif remove_bg:
        image, how = remove_background(image), f"rembg {REMBG_MODEL}"
        if not has_transparency(image):
            raise InputError("background removal kept the whole image: no object stood out",
                             hint="give an RGBA image with a transparent background, or pass --no-remove-bg")
    else:
        return np.asarray(image.convert("RGB")), "as is"
    framed = resize_foreground(np.asarray(image), foreground_ratio)
    return composite_gray(framed), f"{how}, foreground ratio {foreground_ratio:g}, gray background"


def model_input(images: np.ndarray, size: int) -> torch.Tensor:
    """uint8 (B,) H, W, 3 -> float (B, 3, size, size) in [0, 1]: bilinear with antialiasing, as the official code."""
    import torch  # here: planning a mesh job (reading its image) needs no torch
    import torch.nn.functional as F

    batch = torch.from_numpy(np.ascontiguousarray(images).astype(np.float32) / 255.0)
    if batch.ndim == 3:
        batch = batch.unsqueeze(0)
    return F.interpolate(batch.permute(0, 3, 1, 2), (size, size), mode="bilinear", align_corners=False,
                         antialias=True)
