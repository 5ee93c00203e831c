"""Triangles to pixels in plain torch, batched: which triangle covers each pixel centre, and where in it.

Used in UV space (each texel's point on the surface, for baking) and in screen space with a depth test (the
turntable). No OpenGL context: the same code runs on any torch device, and on one machine gives the same
pixels every time (ties between triangles go to the nearest, then to the lowest face index).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

CANDIDATES = 1 << 21  # bounding-box pixels of the triangles drawn at once: at most ~150 MB of temporaries
_NONE = torch.iinfo(torch.int64).max
_EDGE = 1e-9  # a pixel centre on a shared edge belongs to both triangles (the tie rule picks one)


@dataclass(frozen=True)
class Coverage:
    """Per pixel, row-major (height, width): the covering face (-1: none) and its barycentric weights."""

    face: torch.Tensor  # (H, W) int64
    weights: torch.Tensor  # (H, W, 3) float64, screen-space (not perspective-corrected); 0 where uncovered

    @property
    def covered(self) -> torch.Tensor:
        return self.face >= 0


def barycentric(corners: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Weights (N, 3) of points (x, y) in triangles (N, 3, 2); all >= 0 inside, whatever the winding."""
    a, b, c = corners[:, 0], corners[:, 1], corners[:, 2]
    area = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])

    def edge(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:  # twice the signed area of (p, q, point)
        return (q[:, 0] - p[:, 0]) * (y - p[:, 1]) - (q[:, 1] - p[:, 1]) * (x - p[:, 0])

    return torch.stack((edge(b, c), edge(c, a), edge(a, b)), dim=1) / area[:, None]


def rasterize(corners: torch.Tensor, width: int, height: int, depth: torch.Tensor | None = None,
              candidates: int = CANDIDATES) -> Coverage:
    """Cover the pixel centres (x + 0.5, y + 0.5) of a width x height image with triangles.

    corners: (M, 3, 2) in pixels, x right and y down. depth: (M, 3) positive distances along the view, for a
    depth test with perspective-correct interpolation of 1/depth; None when the triangles do not overlap (a
    UV atlas) and the lowest face index wins. Degenerate triangles and ones touching the eye are skipped.
    Scanline order: each pixel row of a triangle gets the exact span of pixel centres inside it, so only covered
    pixels are visited (not the whole bounding box).
    """
    corners = corners.to(torch.float64)
    device = corners.device
    xs, ys = corners[..., 0], corners[..., 1]
    x0 = torch.ceil(xs.amin(1) - 0.5).clamp(0, width).long()
    x1 = torch.floor(xs.amax(1) - 0.5).clamp(-1, width - 1).long()
    y0 = torch.ceil(ys.amin(1) - 0.5).clamp(0, height).long()
    y1 = torch.floor(ys.amax(1) - 0.5).clamp(-1, height - 1).long()
    nx, ny = (x1 - x0 + 1).clamp(min=0), (y1 - y0 + 1).clamp(min=0)
    planes, area = _edge_planes(corners - torch.stack((x0, y0), dim=-1)[:, None, :].double())
    usable = area.abs() > 1e-12
    depth_planes = None
    if depth is not None:
        depth = depth.to(torch.float64)
        usable &= (depth > 1e-6).all(1)
        depth_planes = (planes / depth.clamp(min=1e-6)[:, :, None]).sum(1)  # 1/depth = D x + E y + F
    counts = nx * ny * usable  # bounding-box pixels: an upper bound of the work, to size the batches
    best = torch.full((height * width,), _NONE, dtype=torch.int64, device=device)
    ends = counts.cumsum(0)
    start, total_faces = 0, len(counts)
    while start < total_faces:
        before = int(ends[start - 1]) if start else 0
        stop = min(max(int(torch.searchsorted(ends, before + candidates, right=True)), start + 1), total_faces)
        rows = ny[start:stop] * usable[start:stop]
        if int(rows.sum()):
            _cover(best, planes, depth_planes, x0, y0, nx, rows, start, stop, width)
        start = stop
    hit = best != _NONE
    face = torch.where(hit, best & 0xFFFFFFFF if depth is not None else best, torch.full_like(best, -1))
    weights = torch.zeros((height * width, 3), dtype=torch.float64, device=device)
    pixels = hit.nonzero().squeeze(1)
    if len(pixels):
        winners = face[pixels]
        weights[pixels] = barycentric(corners[winners], (pixels % width).double() + 0.5,
                                      (pixels // width).double() + 0.5)
    return Coverage(face.view(height, width), weights.view(height, width, 3))


def _edge_planes(local: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per triangle (corners relative to its box), the weights as planes w_i = A x + B y + C: (M, 3, 3)."""
    a, b, c = local[:, 0], local[:, 1], local[:, 2]
    area = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    safe = torch.where(area.abs() > 1e-12, area, torch.ones_like(area))
    rows = []
    for p, q in ((b, c), (c, a), (a, b)):  # the edge opposite each corner
        dx, dy = q[:, 0] - p[:, 0], q[:, 1] - p[:, 1]
        rows.append(torch.stack((-dy, dx, dy * p[:, 0] - dx * p[:, 1]), dim=-1))
    return torch.stack(rows, dim=1) / safe[:, None, None], area


def _cover(best: torch.Tensor, planes: torch.Tensor, depth_planes: torch.Tensor | None, x0: torch.Tensor,
           y0: torch.Tensor, nx: torch.Tensor, rows: torch.Tensor, start: int, stop: int, width: int) -> None:
    """Faces start..stop: the span of each of their pixel rows, then its pixels; keep the smallest key per pixel."""
    device = best.device
    row_face = torch.repeat_interleave(torch.arange(start, stop, device=device), rows)
    row = torch.arange(len(row_face), device=device) - (rows.cumsum(0) - rows)[row_face - start]
    plane = planes[row_face]  # (R, 3 weights, 3 coefficients)
    slope = plane[:, :, 0]
    offset = plane[:, :, 1] * (row.double() + 0.5)[:, None] + plane[:, :, 2]  # w_i = slope_i * x + offset_i >= 0
    bound = (-_EDGE - offset) / torch.where(slope == 0, torch.ones_like(slope), slope)
    flat_out = (slope == 0) & (offset < -_EDGE)
    limit = float(width + 1)
    low = torch.where(slope > 0, bound, torch.full_like(bound, -1.0)).amax(1).clamp(-1.0, limit)
    high = torch.where(slope < 0, bound, torch.full_like(bound, limit)).amin(1).clamp(-1.0, limit)
    first = torch.maximum(torch.ceil(low - 0.5).long(), torch.zeros_like(row))
    last = torch.minimum(torch.floor(high - 0.5).long(), nx[row_face] - 1)
    span = (last - first + 1).clamp(min=0) * ~flat_out.any(1)
    if int(span.sum()) == 0:
        return
    owner = torch.repeat_interleave(torch.arange(len(span), device=device), span)
    lx = first[owner] + torch.arange(len(owner), device=device) - (span.cumsum(0) - span)[owner]
    ly = row[owner]
    face = row_face[owner]
    pixel = (y0[face] + ly) * width + x0[face] + lx
    if depth_planes is None:
        key = face
    else:  # nearest first: positive float32 depths order like their bit patterns
        d = depth_planes[face]
        z = (1.0 / (d[:, 0] * (lx.double() + 0.5) + d[:, 1] * (ly.double() + 0.5) + d[:, 2])).float()
        key = (z.view(torch.int32).long() << 32) | face
    best.scatter_reduce_(0, pixel, key, reduce="amin")
