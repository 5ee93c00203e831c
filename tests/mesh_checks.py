"""Independent checks of stablekit's textured meshes: texels against a colour field, and glTF's rules in Python.

Written without stablekit's rasteriser or writer, so a bug there cannot hide itself.
"""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np

ARRAY_BUFFER, ELEMENT_ARRAY_BUFFER = 34962, 34963
VALIDATOR = "gltf-validator@2.0.0-dev.3.10"  # the Khronos glTF validator, compiled to JavaScript


def texel_owners(uv: np.ndarray, faces: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Per texel (row-major, row 0 at v = 1) the face whose UV triangle holds its centre (-1: none), and the
    barycentric weights there; face by face over its bounding box, in plain numpy."""
    owner = np.full(size * size, -1)
    weights = np.zeros((size * size, 3))
    corners = np.stack((uv[faces][..., 0] * size, (1 - uv[faces][..., 1]) * size), axis=-1)
    for index, (a, b, c) in enumerate(corners):
        low = np.clip(np.ceil(np.minimum(np.minimum(a, b), c) - 0.5), 0, size).astype(int)
        high = np.clip(np.floor(np.maximum(np.maximum(a, b), c) - 0.5), -1, size - 1).astype(int)
        if (high < low).any():
            continue
        xs, ys = np.meshgrid(np.arange(low[0], high[0] + 1), np.arange(low[1], high[1] + 1))
        px, py = xs.ravel() + 0.5, ys.ravel() + 0.5
        area = (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])
        if abs(area) < 1e-12:
            continue
        w = np.stack([((q[0] - p[0]) * (py - p[1]) - (q[1] - p[1]) * (px - p[0])) / area
                      for p, q in ((b, c), (c, a), (a, b))], axis=1)
        inside = (w >= -1e-9).all(1)
        flat = ys.ravel()[inside] * size + xs.ravel()[inside]
        owner[flat] = index
        weights[flat] = w[inside]
    return owner, weights


def interior_texels(owner: np.ndarray, size: int) -> np.ndarray:
    """Texels on a chart whose eight neighbours are on a chart too: at least a texel away from any border."""
    covered = (owner >= 0).reshape(size, size)
    padded = np.pad(covered, 1)
    inner = covered.copy()
    for dy in range(3):
        for dx in range(3):
            inner &= padded[dy:dy + size, dx:dx + size]
    return np.flatnonzero(inner)


def texture_errors(mesh, colors_at, samples: int = 400, seed: int = 0) -> tuple[np.ndarray, int]:
    """|texel - colour field at the texel's surface point| * 255 for up to `samples` interior texels of a
    trimesh.Trimesh with TextureVisuals; `colors_at(points in the mesh's frame) -> RGB in [0, 1]`."""
    image = np.asarray(mesh.visual.material.baseColorTexture.convert("RGB")).astype(float)
    size = image.shape[0]
    uv, faces = np.asarray(mesh.visual.uv, dtype=float), np.asarray(mesh.faces)
    owner, weights = texel_owners(uv, faces, size)
    inner = interior_texels(owner, size)
    picked = np.random.default_rng(seed).permutation(inner)[:samples]
    points = (weights[picked][:, :, None] * np.asarray(mesh.vertices, dtype=float)[faces[owner[picked]]]).sum(1)
    expected = np.asarray(colors_at(points), dtype=float) * 255.0
    actual = image.reshape(-1, 3)[picked]
    return np.abs(actual - expected).max(axis=1), len(inner)


def glb_parts(data: bytes) -> tuple[dict, bytes]:
    magic, version, length = struct.unpack_from("<4sII", data)
    assert magic == b"glTF" and version == 2 and length == len(data), (magic, version, length, len(data))
    json_length, json_type = struct.unpack_from("<II", data, 12)
    assert json_type == 0x4E4F534A and json_length % 4 == 0
    tree = json.loads(data[20:20 + json_length])
    rest = 20 + json_length
    binary = b""
    if rest < len(data):
        bin_length, bin_type = struct.unpack_from("<II", data, rest)
        assert bin_type == 0x004E4942 and bin_length % 4 == 0 and rest + 8 + bin_length == len(data)
        binary = data[rest + 8:rest + 8 + bin_length]
    return tree, binary


_COMPONENTS = {5120: ("b", 1), 5121: ("B", 1), 5122: ("h", 2), 5123: ("H", 2), 5125: ("I", 4), 5126: ("f", 4)}
_WIDTH = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4}


def accessor_data(tree: dict, binary: bytes, index: int) -> np.ndarray:
    accessor = tree["accessors"][index]
    view = tree["bufferViews"][accessor["bufferView"]]
    code, size = _COMPONENTS[accessor["componentType"]]
    width = _WIDTH[accessor["type"]]
    start = view.get("byteOffset", 0) + accessor.get("byteOffset", 0)
    length = accessor["count"] * width * size
    assert "byteStride" not in view or view["byteStride"] == width * size
    assert start % size == 0 and accessor.get("byteOffset", 0) + length <= view["byteLength"]
    return np.frombuffer(binary[start:start + length], dtype=np.dtype(code).newbyteorder("<")).reshape(-1, width)


def check_gltf_rules(data: bytes) -> dict:
    """The glTF 2.0 rules the validator would flag for what stablekit writes; returns the JSON tree."""
    tree, binary = glb_parts(data)
    assert tree["asset"]["version"] == "2.0" and tree["asset"]["generator"].startswith("stablekit")
    assert len(tree.get("buffers", [])) == 1 and tree["buffers"][0]["byteLength"] <= len(binary)
    views = tree["bufferViews"]
    for view in views:
        assert view["buffer"] == 0 and view.get("byteOffset", 0) + view["byteLength"] <= len(binary)
    vertex_views, index_views = set(), set()
    for mesh in tree["meshes"]:
        for primitive in mesh["primitives"]:
            assert primitive.get("mode", 4) == 4
            counts = set()
            for name, index in primitive["attributes"].items():
                accessor = tree["accessors"][index]
                values = accessor_data(tree, binary, index)
                counts.add(accessor["count"])
                vertex_views.add(accessor["bufferView"])
                assert views[accessor["bufferView"]]["byteOffset"] % 4 == 0
                assert np.isfinite(values).all()
                if name == "POSITION":
                    assert accessor["type"] == "VEC3" and accessor["componentType"] == 5126
                    assert np.allclose(accessor["min"], values.min(0)) and np.allclose(accessor["max"], values.max(0))
                elif name == "NORMAL":
                    assert np.allclose(np.linalg.norm(values, axis=1), 1.0, atol=1e-3)
                elif name == "TEXCOORD_0":
                    assert accessor["type"] == "VEC2" and accessor["componentType"] == 5126
            assert len(counts) == 1, f"attributes of different lengths: {counts}"
            indices = tree["accessors"][primitive["indices"]]
            assert indices["componentType"] in (5121, 5123, 5125) and indices["count"] % 3 == 0
            index_views.add(indices["bufferView"])
            values = accessor_data(tree, binary, primitive["indices"])
            assert values.max() < counts.pop()
            if "material" in primitive:
                material = tree["materials"][primitive["material"]]
                texture = material.get("pbrMetallicRoughness", {}).get("baseColorTexture")
                if texture is not None:
                    image = tree["images"][tree["textures"][texture["index"]]["source"]]
                    view = views[image["bufferView"]]
                    assert image["mimeType"] == "image/png" and "target" not in view
                    start = view.get("byteOffset", 0)
                    assert binary[start:start + 8] == b"\x89PNG\r\n\x1a\n"
    for index in vertex_views:
        assert views[index].get("target") == ARRAY_BUFFER
    for index in index_views:
        assert views[index].get("target") == ELEMENT_ARRAY_BUFFER
    return tree


def khronos_validator(folder: Path) -> Path | None:
    """The gltf-validator npm package installed under `folder` (once), or None without node and npm or a registry."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        return None
    package = folder / "node_modules" / "gltf-validator"
    if not (package / "package.json").is_file():
        result = subprocess.run([npm, "install", "--no-audit", "--no-fund", "--silent", "--prefix", str(folder),
                                 VALIDATOR], capture_output=True, text=True, timeout=300, check=False)
        if result.returncode != 0:
            return None
    return package


def validate_with_khronos(package: Path, path: Path) -> dict:
    """The validator's report (its JSON) for one file."""
    script = ("const v = require(process.argv[1]); const fs = require('fs');"
              "v.validateBytes(new Uint8Array(fs.readFileSync(process.argv[2])), {maxIssues: 100})"
              ".then(r => console.log(JSON.stringify(r)), e => { console.error(e); process.exit(3); });")
    result = subprocess.run([shutil.which("node"), "-e", script, str(package), str(path)], capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)
