"""TripoSR (Stability AI and Tripo AI, MIT): one image to a vertex-coloured mesh, stablekit's own implementation.

Loads the official `stabilityai/TripoSR` config.yaml + model.ckpt strictly; see notes/triposr.md for the facts.
Names are imported from their modules on first use, so a light module of this package (preprocess, decimate,
config) can be used without the model's torch code: planning a mesh job imports no torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "config": ("ConfigError", "TripoSRConfig", "ViTConfig", "load_config", "parse_config"),
    "isosurface": ("EmptySurfaceError", "build_mesh", "chunk_count", "density_grid", "extract_mesh", "marching_cubes",
                   "vertex_colors"),
    "model": ("TripoSR", "WeightsError", "build", "from_pretrained", "load_weights", "read_state_dict"),
    "preprocess": ("background_remover_available", "model_input", "prepare"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
