"""From the extracted mesh to the one written: a face budget first, then colours or a baked UV texture.

Both steps read the model only through the colour field (`TriplaneQuery` and a scene code), so they work on
any mesh in TripoSR's frame and need nothing else of the model.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from .bake import bake_texture
from .decimate import decimate
from .isosurface import CHUNK_SIZE, vertex_colors
from .triplane import TriplaneQuery


def color_field(query: TriplaneQuery, scene_code: torch.Tensor,
                chunk_size: int = CHUNK_SIZE) -> Callable[[np.ndarray], np.ndarray]:
    """points (N, 3) in TripoSR's frame -> RGB (N, 3) in [0, 1]: the query that colours the vertices."""

    def colors_at(points: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return vertex_colors(query, scene_code, points, chunk_size)

    return colors_at


def finish_mesh(mesh, colors_at: Callable[[np.ndarray], np.ndarray], *, face_count: int | None = None,
                texture_size: int | None = None,
                stage: Callable[[str], None] = lambda text: None) -> tuple[Any, dict[str, Any]]:
    """(the mesh to write, what was done to it). `mesh`: a welded trimesh.Trimesh in TripoSR's frame.

    With `face_count`, quadric decimation, then colours queried again at the new vertices. With `texture_size`,
    a UV atlas and a baked texture replace the vertex colours.
    """
    details: dict[str, Any] = {}
    if face_count is not None:
        stage(f"Simplifying {len(mesh.faces)} faces to about {face_count} (quadric decimation)")
        mesh, decimation = decimate(mesh, face_count)
        mesh.visual.vertex_colors = colors_at(np.asarray(mesh.vertices, dtype=np.float32))
        details["decimation"] = decimation.to_dict()
    details["watertight"] = bool(mesh.is_watertight)  # of the geometry: a UV atlas splits vertices along seams
    if texture_size is not None:
        stage(f"Baking a {texture_size}x{texture_size} texture (xatlas unwrap, colours at each texel)")
        mesh, details["texture"] = bake_texture(mesh, texture_size, colors_at)
    return mesh, details
