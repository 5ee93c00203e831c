"""TripoSR (Stability AI and Tripo AI, MIT): one image to a vertex-coloured mesh, stablekit's own implementation.

Loads the official `stabilityai/TripoSR` config.yaml + model.ckpt strictly; see notes/triposr.md for the facts.
"""

from .config import ConfigError, TripoSRConfig, ViTConfig, load_config, parse_config
from .isosurface import (
    EmptySurfaceError,
    build_mesh,
    chunk_count,
    density_grid,
    extract_mesh,
    marching_cubes,
    vertex_colors,
)
from .model import TripoSR, WeightsError, build, from_pretrained, load_weights, read_state_dict
from .preprocess import background_remover_available, model_input, prepare

__all__ = [
    "ConfigError", "EmptySurfaceError", "TripoSR", "TripoSRConfig", "ViTConfig", "WeightsError",
    "background_remover_available", "build", "build_mesh", "chunk_count", "density_grid", "extract_mesh",
    "from_pretrained", "load_config", "load_weights", "marching_cubes", "model_input", "parse_config", "prepare",
    "read_state_dict", "vertex_colors",
]
