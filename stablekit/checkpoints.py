"""Single-file checkpoints (the original LDM/SGM layout in one .safetensors): which family, which configs.

The family is read from the tensor names in the file's header, without loading any weights. The configs
(model_index.json, component configs, tokenizers) come from a registry record's repository on disk, so a
checkpoint loads without touching the network.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from .errors import InputError

# Architecture family -> the catalog record whose repository provides the configs.
FAMILY_CONFIGS = {"sd15": "sd15", "sd21": "sd21", "sdxl": "sdxl", "sd3": "sd3-medium"}
# A tensor-name prefix found only in that family's checkpoints, checked in this order.
_MARKERS = (
    ("sd3", "model.diffusion_model.joint_blocks."),
    ("sdxl", "conditioner.embedders.1.model."),
    ("sd21", "cond_stage_model.model.transformer."),
    ("sd15", "cond_stage_model.transformer."),
)
_MAX_HEADER = 100 * 1024 * 1024


def tensor_names(path: Path) -> list[str]:
    """The tensor names in a .safetensors file, from its JSON header (no weights are read)."""
    return list(header(path))


def header(path: Path) -> dict:
    """A .safetensors file's tensors (name -> dtype, shape, offsets) from its JSON header, without its metadata."""
    try:
        with path.open("rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            if length > _MAX_HEADER:
                raise ValueError("header too large")
            tensors = json.loads(handle.read(length))
        if not isinstance(tensors, dict):
            raise ValueError("the header is not a JSON object")
    except (OSError, ValueError, struct.error) as err:
        raise InputError(f"{path}: not a readable .safetensors file ({err})") from None
    tensors.pop("__metadata__", None)
    return tensors


def numel(entry: dict) -> int:
    """The number of elements of one tensor in a header (the product of its shape)."""
    count = 1
    for size in entry.get("shape", []):
        count *= int(size)
    return count


def _parameters(files: list[Path]) -> float:
    """Millions of parameters in safetensors files (products of the tensor shapes in their headers)."""
    return sum(numel(entry) for file in files for entry in header(file).values()) / 1e6


def parameter_counts(folder: Path) -> dict[str, float]:
    """Millions of parameters per component of a model folder (diffusers or transformers layout).

    One weight set per component: the fp16 variant files are skipped when the full-precision ones are there.
    """
    def weights(where: Path) -> list[Path]:
        files = sorted(where.glob("*.safetensors"))
        plain = [f for f in files if ".fp16." not in f.name]
        return plain or files

    if (folder / "model_index.json").is_file():
        counts = {sub.name: _parameters(weights(sub)) for sub in sorted(folder.iterdir()) if sub.is_dir()}
        return {name: round(count, 2) for name, count in counts.items() if count}
    count = _parameters(weights(folder))
    return {"model": round(count, 2)} if count else {}


def detect_family(path: Path) -> str | None:
    names = tensor_names(path)
    for family, prefix in _MARKERS:
        if any(name.startswith(prefix) for name in names):
            return family
    return None


def damaged_file(folder: Path, skip: tuple[str, ...] = ()) -> tuple[Path, str] | None:
    """The first file of a model folder that cannot be what its name says, and why; None when all can.

    Cheap (headers and configs only), so a folder is checked before a minutes-long load trips over it:
    every .safetensors must have a safetensors header, every config a JSON object. `skip`: components
    that will not be loaded from this folder.
    """
    candidates = [*sorted(folder.glob("*")), *sorted(folder.glob("*/*"))]
    for path in candidates:
        if not path.is_file() or (path.parent != folder and path.parent.name in skip):
            continue
        if path.suffix == ".safetensors":
            try:
                header(path)
            except InputError:
                return path, "not a safetensors file"
        elif path.suffix == ".json" and path.name in ("model_index.json", "config.json", "scheduler_config.json"):
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, ValueError):
                return path, "not readable JSON"
            if not isinstance(data, dict):
                return path, f"JSON of the wrong shape (a {type(data).__name__}, not an object)"
    return None
