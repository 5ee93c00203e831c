"""A turntable: the finished mesh rasterised in torch from views around it, at the input image's elevation.

The cameras are the official render's (30 views, elevation 0, distance 1.9, vertical field of view 40 degrees,
white background; view 0 is the input image's camera on +X, Z up, in TripoSR's frame). The official code volume-
renders the density and colour fields (128 samples per ray: ~250 M network queries for 30 views at 256^2, many
minutes on a CPU); this rasterises the mesh that was written instead, with its texture or vertex colours and a
soft headlight, 2x2 supersampled: a preview of exactly the file, in seconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .raster import rasterize

VIEWS = 30
SIZE = 256
FPS = 15  # 30 views: one turn in two seconds
DISTANCE = 1.9
FOVY_DEGREES = 40.0
SUPERSAMPLE = 2
AMBIENT = 0.7  # shade = AMBIENT + (1 - AMBIENT) * |cos(angle to the view)|: colours stay readable, shape shows


@dataclass(frozen=True)
class Camera:
    eye: torch.Tensor  # (3,)
    right: torch.Tensor
    up: torch.Tensor
    forward: torch.Tensor


def orbit(views: int = VIEWS, elevation_degrees: float = 0.0, distance: float = DISTANCE) -> list[Camera]:
    """Cameras evenly around the Z axis looking at the origin; view 0 on +X (the input image's view)."""
    cameras = []
    elevation = math.radians(elevation_degrees)
    world_up = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    for index in range(views):
        azimuth = 2.0 * math.pi * index / views
        eye = distance * torch.tensor([math.cos(elevation) * math.cos(azimuth),
                                       math.cos(elevation) * math.sin(azimuth), math.sin(elevation)],
                                      dtype=torch.float64)
        forward = -eye / eye.norm()
        right = torch.linalg.cross(forward, world_up)
        right = right / right.norm()
        up = torch.linalg.cross(right, forward)
        cameras.append(Camera(eye, right, up, forward))
    return cameras


class _Surface:
    """The mesh's arrays as tensors, and how to colour a point of a face."""

    def __init__(self, mesh) -> None:
        self.vertices = torch.from_numpy(np.asarray(mesh.vertices, dtype=np.float64))
        self.faces = torch.from_numpy(np.asarray(mesh.faces, dtype=np.int64))
        self.normals = torch.from_numpy(np.array(mesh.face_normals, dtype=np.float64))
        self.uv = self.texture = self.colors = None
        visual = mesh.visual
        image = getattr(getattr(visual, "material", None), "baseColorTexture", None)
        if visual.kind == "texture" and visual.uv is not None and image is not None:
            self.uv = torch.from_numpy(np.asarray(visual.uv, dtype=np.float64))
            self.texture = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float64) / 255.0)
        elif visual.kind == "vertex":
            self.colors = torch.from_numpy(np.asarray(visual.vertex_colors[:, :3], dtype=np.float64) / 255.0)

    def color(self, face: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """RGB (N, 3) in [0, 1] at perspective-correct `weights` (N, 3) of faces `face` (N,)."""
        corners = self.faces[face]
        if self.texture is not None:
            uv = (weights[:, :, None] * self.uv[corners]).sum(1)
            return sample_bilinear(self.texture, uv)
        if self.colors is not None:
            return (weights[:, :, None] * self.colors[corners]).sum(1)
        return torch.full((len(face), 3), 0.8, dtype=torch.float64)


def sample_bilinear(texture: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """Bilinear lookup (edges clamped) in an (H, W, C) image at UVs (N, 2) with v up."""
    height, width = texture.shape[:2]
    x = (uv[:, 0] * width - 0.5).clamp(0, width - 1)
    y = ((1.0 - uv[:, 1]) * height - 0.5).clamp(0, height - 1)
    x0, y0 = x.floor().long().clamp(max=width - 2), y.floor().long().clamp(max=height - 2)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    top = texture[y0, x0] * (1 - fx) + texture[y0, x0 + 1] * fx
    bottom = texture[y0 + 1, x0] * (1 - fx) + texture[y0 + 1, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy


def render_view(surface: _Surface, camera: Camera, size: int, fovy_degrees: float = FOVY_DEGREES,
                background: float = 1.0) -> torch.Tensor:
    """One (size, size, 3) float image in [0, 1]."""
    focal = 0.5 * size / math.tan(math.radians(fovy_degrees) / 2.0)
    relative = surface.vertices - camera.eye
    depth = relative @ camera.forward
    x = size / 2.0 + focal * (relative @ camera.right) / depth
    y = size / 2.0 - focal * (relative @ camera.up) / depth
    screen = torch.stack((x, y), dim=-1)
    coverage = rasterize(screen[surface.faces], size, size, depth[surface.faces])
    image = torch.full((size * size, 3), background, dtype=torch.float64)
    pixels = coverage.covered.reshape(-1).nonzero().squeeze(1)
    if len(pixels) == 0:
        return image.view(size, size, 3)
    face = coverage.face.reshape(-1)[pixels]
    weights = coverage.weights.reshape(-1, 3)[pixels] / depth[surface.faces[face]]
    weights = weights / weights.sum(1, keepdim=True)  # perspective-correct
    facing = (surface.normals[face] @ camera.forward).abs()
    image[pixels] = surface.color(face, weights) * (AMBIENT + (1.0 - AMBIENT) * facing)[:, None]
    return image.view(size, size, 3)


def render_turntable(mesh, views: int = VIEWS, size: int = SIZE, elevation_degrees: float = 0.0,
                     distance: float = DISTANCE, on_view=lambda: None) -> np.ndarray:
    """uint8 frames (views, size, size, 3) of a trimesh.Trimesh in TripoSR's frame (x back, y right, z up)."""
    surface = _Surface(mesh)
    frames = np.empty((views, size, size, 3), dtype=np.uint8)
    big = size * SUPERSAMPLE
    for index, camera in enumerate(orbit(views, elevation_degrees, distance)):
        image = render_view(surface, camera, big)
        image = image.view(size, SUPERSAMPLE, size, SUPERSAMPLE, 3).mean(dim=(1, 3))
        frames[index] = (image.clamp(0, 1) * 255.0).round().to(torch.uint8).numpy()
        on_view()
    return frames
