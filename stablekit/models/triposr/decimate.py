"""A face budget: quadric-error decimation (fast-simplification), keeping a closed mesh closed.

fast-simplification (a maintained wrapper of Fast-Quadric-Mesh-Simplification, the one trimesh's
`simplify_quadric_decimation` calls) collapses edges until the face count is reached. On a watertight input it
can, rarely, leave a non-manifold edge; then it is run again less aggressively, and the result says whether the
mesh stayed watertight.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...errors import StablekitError

AGGRESSION = (7, 5, 3)  # fast-simplification's default first, then gentler (slower, more faithful) collapses
MIN_FACES = 4  # a tetrahedron


@dataclass(frozen=True)
class Decimation:
    """What the face budget did, for the record."""

    target: int
    faces_before: int
    vertices_before: int
    faces: int
    vertices: int
    watertight_before: bool
    watertight: bool
    aggression: int | None  # None: the mesh already had no more faces than the budget

    def to_dict(self) -> dict:
        return {"target_faces": self.target, "faces_before": self.faces_before,
                "vertices_before": self.vertices_before, "watertight_before": self.watertight_before,
                "watertight": self.watertight, "aggression": self.aggression}


def decimate(mesh, face_count: int):
    """(simplified trimesh.Trimesh without colours, Decimation) for a trimesh.Trimesh and a face budget."""
    import fast_simplification
    import trimesh

    if face_count < MIN_FACES:
        raise StablekitError(f"a face budget of {face_count} is below the {MIN_FACES} faces of a tetrahedron")
    before = len(mesh.faces)
    closed = bool(mesh.is_watertight)
    plain = trimesh.Trimesh(vertices=np.asarray(mesh.vertices), faces=np.asarray(mesh.faces), process=False)
    if face_count >= before:
        return plain, Decimation(face_count, before, len(mesh.vertices), before, len(mesh.vertices), closed, closed,
                                 None)
    reduction = 1.0 - face_count / before
    result = None
    for aggression in AGGRESSION:
        vertices, faces = fast_simplification.simplify(
            np.asarray(mesh.vertices, dtype=np.float32), np.asarray(mesh.faces, dtype=np.int32),
            target_reduction=reduction, agg=aggression)
        result = _clean(vertices, faces)
        if len(result.faces) and (not closed or result.is_watertight):
            break
    if result is None or len(result.faces) == 0:
        raise StablekitError(f"decimation to {face_count} faces left nothing of the mesh",
                             hint="ask for more faces with --faces")
    return result, Decimation(face_count, before, len(mesh.vertices), len(result.faces), len(result.vertices),
                              closed, bool(result.is_watertight), aggression)


def _clean(vertices: np.ndarray, faces: np.ndarray):
    """Welded, without degenerate or duplicate faces or unused vertices."""
    import trimesh

    mesh = trimesh.Trimesh(vertices=vertices.astype(np.float64), faces=faces.astype(np.int64), process=True)
    mesh.update_faces(mesh.nondegenerate_faces())
    mesh.update_faces(mesh.unique_faces())
    mesh.remove_unreferenced_vertices()
    return mesh
