"""Meshes as GLB, OBJ, PLY or STL (by extension) through trimesh, with provenance where the format allows."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import trimesh
from trimesh.exchange.gltf import export_glb
from trimesh.exchange.obj import export_obj

from ..outputs import write_atomic

FORMATS = {".glb": "glb", ".obj": "obj", ".ply": "ply", ".stl": "stl"}
EXTENSIONS = tuple(FORMATS)
COLORLESS = (".stl",)  # STL stores geometry only
# TripoSR's frame is x back (towards the input camera), y right, z up. "y": glTF's convention, +Y up and the
# input view facing +Z with image-right = +X, a proper rotation (x, y, z) -> (y, z, x). "z": the native frame.
UP_AXES = {"y": (1, 2, 0), "z": (0, 1, 2)}


def orient(mesh: trimesh.Trimesh, up: str) -> trimesh.Trimesh:
    """A copy of `mesh` in the frame named by `up` (a rotation: winding and colours are kept)."""
    turned = mesh.copy()
    turned.vertices = np.ascontiguousarray(mesh.vertices[:, list(UP_AXES[up])])
    return turned


def write_mesh(mesh: trimesh.Trimesh, path: Path, metadata: dict[str, Any] | None = None, *,
               overwrite: bool = False) -> Path:
    """Write by `path`'s extension; a GLB carries `metadata` in its asset extras (same mesh, same bytes)."""
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(f"unsupported mesh format {suffix!r}; use one of {', '.join(EXTENSIONS)}")

    def write(tmp: Path) -> None:
        if suffix == ".glb":
            tmp.write_bytes(glb_bytes(mesh, metadata))
        elif suffix == ".obj":
            header = "written by stablekit" + (f" from {metadata['model']}" if metadata and "model" in metadata else "")
            tmp.write_text(export_obj(mesh, include_normals=False, header=header),
                           encoding="utf-8")
        else:
            tmp.write_bytes(mesh.export(file_type=FORMATS[suffix]))

    return write_atomic(path, write, overwrite=overwrite)


def glb_bytes(mesh: trimesh.Trimesh, metadata: dict[str, Any] | None) -> bytes:
    def add_extras(tree: dict[str, Any]) -> None:
        if metadata is not None:
            tree["asset"]["extras"] = {"stablekit": json.loads(json.dumps(metadata, default=str))}

    return export_glb(trimesh.Scene({"mesh": mesh}), tree_postprocessor=add_extras)


def glb_extras(path: Path) -> dict[str, Any]:
    """The asset extras of a GLB file (its JSON chunk), e.g. to read the provenance back."""
    data = Path(path).read_bytes()
    length = int.from_bytes(data[12:16], "little")
    return json.loads(data[20:20 + length])["asset"].get("extras", {})
