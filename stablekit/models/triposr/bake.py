"""UV texture baking: xatlas unwraps the mesh, each texel finds its surface point, the colour field is read there.

As the official `--bake-texture`, but without an OpenGL context: the texels are rasterised in torch
(stablekit.models.triposr.raster). The colour of a texel is whatever `colors_at` returns for its 3D point —
for TripoSR the same triplane query that colours the vertices. Texels outside every chart are filled from
their neighbours (dilation) so that bilinear filtering and mip-maps do not pull in the background.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ...errors import StablekitError
from .raster import rasterize

CHART_GAP = 2.0  # the smallest gap between charts wanted in the final texture, in texels


@dataclass(frozen=True)
class Atlas:
    """A UV layout: the unwrapped mesh's vertices are copies of the input's (`vertex_map`), split along seams."""

    vertex_map: np.ndarray  # (V',) int64: the input vertex each atlas vertex copies
    faces: np.ndarray  # (M, 3) int64, indices into the atlas vertices, in the input's face order
    uv: np.ndarray  # (V', 2) float32 in [0, 1], v up (OpenGL's and trimesh's convention; glTF flips it on export)
    charts: int
    gap: float  # the smallest gap between charts, in texels of the final texture


@dataclass(frozen=True)
class Texture:
    """The baked base-colour image and how much of it the charts cover."""

    pixels: np.ndarray  # (size, size, 3) uint8, row 0 at v = 1
    coverage: float  # share of texels whose centre lies on a chart (the rest is dilation and fill)


def unwrap(vertices: np.ndarray, faces: np.ndarray, size: int) -> Atlas:
    """xatlas charts packed for a size x size texture with at least CHART_GAP texels between charts.

    xatlas sizes the layout only approximately to the resolution asked for; the UVs it returns are normalised
    to its actual width and height, so the gap shrinks by size / max(width, height): when that leaves less than
    CHART_GAP texels, it packs once more with a wider padding.
    """
    import xatlas

    positions = np.ascontiguousarray(vertices, dtype=np.float32)
    indices = np.ascontiguousarray(faces, dtype=np.uint32)
    padding = max(3, round(size / 256) + 1)
    for _ in range(3):
        atlas = xatlas.Atlas()
        atlas.add_mesh(positions, indices)
        pack = xatlas.PackOptions()
        pack.resolution, pack.padding, pack.bilinear = size, padding, True
        atlas.generate(xatlas.ChartOptions(), pack)
        if atlas.atlas_count != 1:
            raise StablekitError(f"xatlas split the mesh over {atlas.atlas_count} textures (one is supported)")
        gap = padding * size / max(atlas.width, atlas.height)
        if gap >= CHART_GAP:
            break
        padding = math.ceil(padding * CHART_GAP / gap)
    vertex_map, atlas_faces, uv = atlas[0]
    return Atlas(vertex_map.astype(np.int64), atlas_faces.astype(np.int64), uv.astype(np.float32),
                 atlas.chart_count, gap)


def uv_to_pixels(uv: torch.Tensor, size: int) -> torch.Tensor:
    """UV (v up) -> texture pixel coordinates (x right, y down; texel centres at +0.5)."""
    return torch.stack((uv[..., 0] * size, (1.0 - uv[..., 1]) * size), dim=-1)


def texel_points(vertices: np.ndarray, atlas: Atlas, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The texels whose centre lies on a chart (flat row-major indices) and their 3D points on the surface."""
    uv = torch.from_numpy(atlas.uv).double()
    faces = torch.from_numpy(atlas.faces)
    coverage = rasterize(uv_to_pixels(uv[faces], size), size, size)
    flat_face = coverage.face.reshape(-1)
    texels = (flat_face >= 0).nonzero().squeeze(1)
    corners = torch.from_numpy(np.asarray(vertices, dtype=np.float64))[torch.from_numpy(atlas.vertex_map)]
    weights = coverage.weights.reshape(-1, 3)[texels]
    points = (weights[:, :, None] * corners[faces[flat_face[texels]]]).sum(1)
    return texels.numpy(), points.numpy()


def dilate(image: np.ndarray, mask: np.ndarray, steps: int) -> np.ndarray:
    """Grow the covered texels `steps` rings outwards (each new texel: the mean of its covered 3x3 neighbours),
    then fill what is still empty with the mean covered colour. float (H, W, C) in, float out."""
    image = np.where(mask[..., None], image, 0.0).astype(np.float64)
    mask = mask.copy()
    height, width = mask.shape
    for _ in range(steps):
        padded_image = np.pad(image * mask[..., None], ((1, 1), (1, 1), (0, 0)))
        padded_mask = np.pad(mask, 1).astype(np.float64)
        sums = np.zeros_like(image)
        counts = np.zeros(mask.shape)
        for dy in range(3):
            for dx in range(3):
                sums += padded_image[dy:dy + height, dx:dx + width]
                counts += padded_mask[dy:dy + height, dx:dx + width]
        grow = ~mask & (counts > 0)
        if not grow.any():
            break
        image[grow] = sums[grow] / counts[grow, None]
        mask |= grow
    if mask.any() and not mask.all():
        image[~mask] = image[mask].mean(0)
    return image


def bake(vertices: np.ndarray, atlas: Atlas, size: int,
         colors_at: Callable[[np.ndarray], np.ndarray]) -> Texture:
    """The size x size texture: colours_at(points (K, 3) float32) -> (K, 3) in [0, 1] at every chart texel."""
    texels, points = texel_points(vertices, atlas, size)
    if len(texels) == 0:
        raise StablekitError("texture baking found no texel on the surface (the mesh has no area)")
    colours = np.asarray(colors_at(points.astype(np.float32)), dtype=np.float64)
    image = np.zeros((size * size, 3))
    image[texels] = colours
    mask = np.zeros(size * size, dtype=bool)
    mask[texels] = True
    filled = dilate(image.reshape(size, size, 3), mask.reshape(size, size), steps=max(4, size // 64))
    pixels = np.round(np.clip(filled, 0.0, 1.0) * 255.0).astype(np.uint8)
    return Texture(pixels, len(texels) / size**2)


def textured_mesh(mesh, atlas: Atlas, texture: Texture):
    """A trimesh.Trimesh split along the atlas seams, with UVs and a PBR material (rough, non-metal) whose base
    colour is the texture. Vertex normals come from the unsplit mesh, so the seams do not show in shading."""
    import trimesh
    from PIL import Image

    material = trimesh.visual.material.PBRMaterial(
        name="baked", baseColorTexture=Image.fromarray(texture.pixels, "RGB"), metallicFactor=0.0,
        roughnessFactor=1.0)
    visual = trimesh.visual.TextureVisuals(uv=atlas.uv, material=material)
    return trimesh.Trimesh(vertices=np.asarray(mesh.vertices)[atlas.vertex_map], faces=atlas.faces,
                           vertex_normals=np.asarray(mesh.vertex_normals)[atlas.vertex_map], visual=visual,
                           process=False)


def bake_texture(mesh, size: int, colors_at: Callable[[np.ndarray], np.ndarray]):
    """Unwrap `mesh` (a trimesh.Trimesh), bake a size x size texture from `colors_at`, return (textured mesh, facts)."""
    atlas = unwrap(mesh.vertices, mesh.faces, size)
    texture = bake(np.asarray(mesh.vertices), atlas, size, colors_at)
    facts = {"size": size, "charts": atlas.charts, "chart_gap_texels": round(atlas.gap, 2),
             "coverage": round(texture.coverage, 4), "dilation_texels": max(4, size // 64)}
    return textured_mesh(mesh, atlas, texture), facts
