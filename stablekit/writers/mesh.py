"""Meshes as GLB, OBJ, PLY or STL (by extension) through trimesh, with provenance where the format allows.

A textured mesh (UVs and a base-colour image) is written as a GLB with the PNG inside, or as an OBJ with its
material file NAME.mtl and texture NAME-texture.png beside it: the three are one output, named together
(numbered together around existing files), each written under a temporary name and moved into place, the OBJ
last, so a reader never finds an OBJ whose material or texture is missing or half-written.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # trimesh (1.5 s to import) is imported where a mesh is written: planning needs none
    import trimesh

from .. import __version__
from ..outputs import current_umask, storage_error, temporary_path, write_atomic

FORMATS = {".glb": "glb", ".obj": "obj", ".ply": "ply", ".stl": "stl"}
EXTENSIONS = tuple(FORMATS)
COLORLESS = (".stl",)  # STL stores geometry only
TEXTURED = (".glb", ".obj")  # formats that carry a UV texture (PLY keeps vertex colours)
GENERATOR = f"stablekit {__version__}"
ARRAY_BUFFER, ELEMENT_ARRAY_BUFFER = 34962, 34963  # glTF bufferView targets: vertex data, indices
# TripoSR's frame is x back (towards the input camera), y right, z up. "y": glTF's convention, +Y up and the
# input view facing +Z with image-right = +X, a proper rotation (x, y, z) -> (y, z, x). "z": the native frame.
UP_AXES = {"y": (1, 2, 0), "z": (0, 1, 2)}


def is_textured(mesh: trimesh.Trimesh) -> bool:
    return mesh.visual.kind == "texture"


def orient(mesh: trimesh.Trimesh, up: str) -> trimesh.Trimesh:
    """A copy of `mesh` in the frame named by `up` (a rotation: winding, colours, UVs and normals are kept)."""
    import trimesh

    axes = list(UP_AXES[up])
    return trimesh.Trimesh(vertices=np.ascontiguousarray(np.asarray(mesh.vertices)[:, axes]), faces=mesh.faces.copy(),
                           vertex_normals=np.ascontiguousarray(np.asarray(mesh.vertex_normals)[:, axes]),
                           visual=mesh.visual.copy(), process=False)


def companions(path: Path) -> dict[str, Path]:
    """The files a textured OBJ at `path` comes with: its material library and its texture."""
    return {"material": path.with_suffix(".mtl"), "texture": path.with_name(f"{path.stem}-texture.png")}


def written_files(mesh: trimesh.Trimesh, path: Path) -> list[Path]:
    """Every file that write_mesh(mesh, ...) made at `path` (the path it returned), the mesh file first."""
    if path.suffix.lower() == ".obj" and is_textured(mesh):
        return [path, *companions(path).values()]
    return [path]


def write_mesh(mesh: trimesh.Trimesh, path: Path, metadata: dict[str, Any] | None = None, *,
               overwrite: bool = False) -> Path:
    """Write by `path`'s extension; returns the mesh file's path (see written_files for its companions).

    A GLB carries `metadata` in its asset extras; a textured OBJ's texture carries it in a PNG text chunk.
    The same mesh and metadata give the same bytes.
    """
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(f"unsupported mesh format {suffix!r}; use one of {', '.join(EXTENSIONS)}")
    if is_textured(mesh) and suffix not in TEXTURED:
        raise ValueError(f"{suffix} stores no texture; write a textured mesh as {' or '.join(TEXTURED)}")
    if suffix == ".obj" and is_textured(mesh):
        return write_together(lambda target: textured_obj_files(mesh, target, metadata), path, overwrite=overwrite)

    def write(tmp: Path) -> None:
        if suffix == ".glb":
            tmp.write_bytes(glb_bytes(mesh, metadata))
        elif suffix == ".obj":
            from trimesh.exchange.obj import export_obj

            tmp.write_text(export_obj(mesh, include_normals=False, header=_header(metadata)), encoding="utf-8")
        else:
            tmp.write_bytes(mesh.export(file_type=FORMATS[suffix]))

    return write_atomic(path, write, overwrite=overwrite)


def _header(metadata: dict[str, Any] | None) -> str:
    return "written by stablekit" + (f" from {metadata['model']}" if metadata and "model" in metadata else "")


def textured_obj_files(mesh: trimesh.Trimesh, path: Path, metadata: dict[str, Any] | None) -> dict[Path, bytes]:
    """The OBJ (with UVs and normals), its MTL and its PNG texture as they must be named for `path`.

    The MTL is written here rather than by trimesh, whose conversion of the PBR material sets Kd to 0.4 (many
    viewers multiply the texture by Kd) and names the image after the material.
    """
    from PIL.PngImagePlugin import PngInfo

    files = companions(path)
    from trimesh.exchange.obj import export_obj

    text, _ = export_obj(mesh, include_normals=True, include_texture=True, return_texture=True,
                         mtl_name=files["material"].name, header=_header(metadata))
    material_name = mesh.visual.material.name or "material"
    mtl = (f"# {_header(metadata)}\nnewmtl {material_name}\nKa 0 0 0\nKd 1 1 1\nKs 0 0 0\nd 1\nillum 1\n"
           f"map_Kd {files['texture'].name}\n")
    info = PngInfo()
    info.add_text("Software", GENERATOR)
    if metadata is not None:
        info.add_itxt("stablekit", json.dumps(metadata, default=str, sort_keys=True))
    png = io.BytesIO()
    mesh.visual.material.baseColorTexture.save(png, format="PNG", pnginfo=info)
    return {files["texture"]: png.getvalue(), files["material"]: mtl.encode(), path: text.encode()}


def write_together(contents: Callable[[Path], dict[Path, bytes]], path: Path, *, overwrite: bool = False) -> Path:
    """Write several files that name one another, as one output: `contents(path)` gives each file's bytes when
    the main file is `path` (the main file last). Without `overwrite`, the first numbered name (NAME-2 ...) at
    which none of the files exists is used; each file is moved into place whole, in order, and if one cannot be
    placed the ones already placed are removed again."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise storage_error(err, path.parent, "create") from None
    candidate, n = path, 1
    while True:
        files = contents(candidate)
        if overwrite or not any(p.exists() or p.is_symlink() for p in files):
            placed = _place(files, overwrite)
            if placed:
                return candidate
        n += 1
        candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")  # numbered as stablekit.outputs does


def _place(files: dict[Path, bytes], overwrite: bool) -> bool:
    """Write each file to a temporary sibling, then link (or, with overwrite, rename) them into place in order.
    False when another process took one of the names first (the ones placed are removed again)."""
    temps: dict[Path, Path] = {}
    placed: list[Path] = []
    try:
        for target, data in files.items():
            temps[target] = tmp = temporary_path(target)  # known before a byte is written: removed below
            tmp.write_bytes(data)
            os.chmod(tmp, 0o666 & ~current_umask())
        for target, tmp in temps.items():
            if overwrite:
                os.replace(tmp, target)
            else:
                try:
                    os.link(tmp, target)
                except FileExistsError:
                    for done in placed:
                        done.unlink(missing_ok=True)
                    return False
            placed.append(target)
        return True
    except OSError as err:
        if not overwrite:
            for done in placed:
                done.unlink(missing_ok=True)
        raise storage_error(err, next(reversed(files))) from None
    finally:
        for tmp in temps.values():
            tmp.unlink(missing_ok=True)


def glb_bytes(mesh: trimesh.Trimesh, metadata: dict[str, Any] | None) -> bytes:
    """Binary glTF with vertex normals, stablekit named as the generator, bufferView targets set (vertex data
    34962, indices 34963, none for images) and `metadata` in the asset's extras."""

    def finish(tree: dict[str, Any]) -> None:
        tree["asset"]["generator"] = GENERATOR
        if metadata is not None:
            tree["asset"]["extras"] = {"stablekit": json.loads(json.dumps(metadata, default=str))}
        accessors, views = tree.get("accessors", []), tree.get("bufferViews", [])
        for gltf_mesh in tree.get("meshes", []):
            for primitive in gltf_mesh["primitives"]:
                for accessor in primitive["attributes"].values():
                    views[accessors[accessor]["bufferView"]]["target"] = ARRAY_BUFFER
                if "indices" in primitive:
                    views[accessors[primitive["indices"]]["bufferView"]]["target"] = ELEMENT_ARRAY_BUFFER

    import trimesh
    from trimesh.exchange.gltf import export_glb

    return export_glb(trimesh.Scene({"mesh": mesh}), include_normals=True, tree_postprocessor=finish)


def glb_json(path: Path) -> dict[str, Any]:
    """The JSON chunk of a GLB file."""
    data = Path(path).read_bytes()
    length = int.from_bytes(data[12:16], "little")
    return json.loads(data[20:20 + length])


def glb_extras(path: Path) -> dict[str, Any]:
    """The asset extras of a GLB file (its JSON chunk), e.g. to read the provenance back."""
    return glb_json(path)["asset"].get("extras", {})
