"""From a scene code to a vertex-coloured mesh: density on a grid, marching cubes (PyMCubes), colours at vertices."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from ...errors import StablekitError
from .triplane import TriplaneQuery

THRESHOLD = 25.0  # the official iso-level, on the activated density exp(logit - 1)
CHUNK_SIZE = 8192  # points per query in the official code; the fastest size on CPUs


class EmptySurfaceError(StablekitError):
    """The density never crosses the iso-level: nothing to mesh."""


def grid_axis(resolution: int, radius: float) -> torch.Tensor:
    """The world coordinates of one grid axis: linspace(0, 1) mapped to [-radius, radius] as the official code does."""
    unit = torch.linspace(0.0, 1.0, resolution)
    return (unit - 0.0) / (1.0 - 0.0) * (radius - (-radius)) + (-radius)


def grid_points(axis: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    """Points start..stop of the flattened [ix, iy, iz] grid over `axis` (x slowest, z fastest), shape (n, 3)."""
    resolution = axis.shape[0]
    flat = torch.arange(start, stop, device=axis.device)
    ix, rest = flat.div(resolution * resolution, rounding_mode="floor"), flat % (resolution * resolution)
    iy, iz = rest.div(resolution, rounding_mode="floor"), rest % resolution
    return torch.stack((axis[ix], axis[iy], axis[iz]), dim=-1)


@torch.inference_mode()
def density_grid(query: TriplaneQuery, scene_code: torch.Tensor, resolution: int, chunk_size: int = CHUNK_SIZE,
                 on_chunk: Callable[[], None] = lambda: None) -> np.ndarray:
    """Activated density at every grid point, (R, R, R) float32 indexed [ix, iy, iz]; `chunk_size` points at a time.

    Only the density leaves the device; the full per-point outputs of a chunk are dropped right away.
    """
    device, dtype = scene_code.device, scene_code.dtype
    total = resolution**3
    chunk = total if chunk_size <= 0 else chunk_size
    axis = grid_axis(resolution, query.config.radius).to(device=device, dtype=dtype)
    out = np.empty(total, dtype=np.float32)
    for start in range(0, total, chunk):
        stop = min(start + chunk, total)
        points = grid_points(axis, start, stop)
        out[start:stop] = query.density(query.raw(scene_code, points)).float().cpu().numpy()
        on_chunk()
    return out.reshape(resolution, resolution, resolution)


def chunk_count(resolution: int, chunk_size: int) -> int:
    total = resolution**3
    return 1 if chunk_size <= 0 else -(-total // chunk_size)


def marching_cubes(density: np.ndarray, threshold: float, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """The iso-surface density == threshold as (vertices in world units, faces), outward winding.

    PyMCubes returns vertices in [ix, iy, iz] index order already (no column swap, unlike torchmcubes), and its
    winding matches the official mesh's (positive volume) on a field that is high inside.
    """
    import mcubes

    if not np.isfinite(density).all():
        raise StablekitError("the density grid holds NaN or infinite values",
                             hint="run in float32 (--dtype float32); half precision can overflow exp()")
    low, high = float(density.min()), float(density.max())
    if not low < threshold < high:
        side = "below" if high <= threshold else "above"
        raise EmptySurfaceError(
            f"no surface: the density is {side} the iso-level {threshold:g} everywhere "
            f"(range {low:.3g} to {high:.3g})",
            hint="the model saw no object: use an image of one object on a plain or transparent background"
                 + (", or a lower --threshold" if side == "below" else ", or a higher --threshold"))
    vertices, faces = mcubes.marching_cubes(density, threshold)
    if len(faces) == 0:
        raise EmptySurfaceError("no surface: marching cubes found no triangles")
    resolution = density.shape[0]
    vertices = vertices.astype(np.float32) / (resolution - 1.0)
    vertices = (vertices - 0.0) / (1.0 - 0.0) * (radius - (-radius)) + (-radius)
    return vertices.astype(np.float32), faces.astype(np.int64)


@torch.inference_mode()
def vertex_colors(query: TriplaneQuery, scene_code: torch.Tensor, vertices: np.ndarray,
                  chunk_size: int = CHUNK_SIZE) -> np.ndarray:
    """sigmoid colour (N, 3) in [0, 1] queried at world-space vertices."""
    points = torch.from_numpy(np.ascontiguousarray(vertices, dtype=np.float32)).to(scene_code.device,
                                                                                    scene_code.dtype)
    chunk = len(points) if chunk_size <= 0 else chunk_size
    parts = [query.color(query.raw(scene_code, points[i:i + chunk])).float().cpu()
             for i in range(0, len(points), max(chunk, 1))]
    return torch.cat(parts).numpy() if parts else np.zeros((0, 3), np.float32)


def build_mesh(query: TriplaneQuery, scene_code: torch.Tensor, vertices: np.ndarray, faces: np.ndarray,
               chunk_size: int = CHUNK_SIZE):
    """A trimesh.Trimesh welded as the official code does (trimesh's merge), coloured at its final vertices."""
    import trimesh

    mesh = trimesh.Trimesh(vertices=vertices, faces=faces, process=True)  # merge duplicates, drop unreferenced
    mesh.visual.vertex_colors = vertex_colors(query, scene_code, mesh.vertices, chunk_size)
    return mesh


def extract_mesh(query: TriplaneQuery, scene_code: torch.Tensor, resolution: int, *, threshold: float = THRESHOLD,
                 chunk_size: int = CHUNK_SIZE, on_chunk: Callable[[], None] = lambda: None):
    """A welded, vertex-coloured trimesh.Trimesh in TripoSR's native frame (x back, y right, z up)."""
    density = density_grid(query, scene_code, resolution, chunk_size, on_chunk)
    vertices, faces = marching_cubes(density, threshold, query.config.radius)
    return build_mesh(query, scene_code, vertices, faces, chunk_size)
