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
    try:
        with path.open("rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            if length > _MAX_HEADER:
                raise ValueError("header too large")
            header = json.loads(handle.read(length))
    except (OSError, ValueError, struct.error) as err:
        raise InputError(f"{path}: not a readable .safetensors file ({err})") from None
    return [name for name in header if name != "__metadata__"]


def detect_family(path: Path) -> str | None:
    names = tensor_names(path)
    for family, prefix in _MARKERS:
        if any(name.startswith(prefix) for name in names):
            return family
    return None
