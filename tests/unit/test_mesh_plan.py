"""`stablekit mesh` logic without models: the mesh settings from the device plan, input rules, preprocessing, frames."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh
from PIL import Image

from stablekit.devices import Hardware
from stablekit.engines import mesh as engine
from stablekit.errors import InputError, UsageError
from stablekit.jobs import Job
from stablekit.models.triposr import preprocess
from stablekit.params import MeshRequest
from stablekit.registry import load_registry
from stablekit.writers.mesh import glb_extras, orient, write_mesh

GPU = Hardware("cuda", "NVIDIA A100", 40.0, 38.0, 64.0, 60.0, (8, 0), 1)
OLD_GPU = Hardware("cuda", "NVIDIA T4", 16.0, 15.0, 32.0, 30.0, (7, 5), 1)
MAC = Hardware("mps", "Apple silicon", 32.0, 20.0, 32.0, 20.0, None, 1)
CPU = Hardware("cpu", "x86_64 (8 cores)", 32.0, 24.0, 32.0, 24.0, None, 0)


@pytest.fixture(scope="module")
def spec():
    return load_registry().get("triposr")


@pytest.fixture
def picture(tmp_path) -> str:
    pixels = np.zeros((20, 20, 4), np.uint8)
    pixels[5:15, 5:15] = [200, 30, 30, 255]
    Image.fromarray(pixels).save(tmp_path / "x.png")
    return str(tmp_path / "x.png")


def plan_of(spec, request: MeshRequest, hardware):
    """The device plan engine.plan makes for `request` (an --image job) on `hardware`."""
    return engine.plan(Job("mesh", spec, request), hardware).device_plan


@pytest.mark.parametrize(("hardware", "resolution", "chunk"), [
    (GPU, 256, None), (OLD_GPU, 256, None), (MAC, 192, None), (CPU, 128, 8192)])
def test_resolution_and_chunks_follow_the_device(spec, picture, hardware, resolution, chunk):
    device_plan = plan_of(spec, MeshRequest(prompt="", image=picture), hardware)
    chosen = engine.settings(device_plan, MeshRequest(prompt="", image=picture))
    assert chosen.resolution == resolution
    if chunk:
        assert chosen.chunk_size == chunk
    else:  # sized to the memory left beside the model: a power of two within the range
        low, high = engine.CHUNK_RANGE
        assert low <= chosen.chunk_size <= high and chosen.chunk_size & (chosen.chunk_size - 1) == 0
    assert any(r.startswith(f"mesh grid {resolution}^3") for r in device_plan.reasons)
    assert any(r.startswith("density queries of") for r in device_plan.reasons)


def test_chunks_shrink_with_memory(spec, picture):
    request = MeshRequest(prompt="", image=picture)
    roomy = engine.settings(plan_of(spec, request, GPU), request).chunk_size
    tight = engine.settings(plan_of(spec, request, GPU.__class__(**{**GPU.to_dict(), "memory_free_gib": 4.0})),
                            request).chunk_size
    assert tight < roomy


def test_flags_override_the_plan(spec, picture):
    request = MeshRequest(prompt="", image=picture, mc_resolution=320, chunk_size=0)
    chosen = engine.settings(plan_of(spec, request, GPU), request)
    assert (chosen.resolution, chosen.chunk_size) == (320, 0)
    assert any("asked for" in r for r in chosen.reasons)


def test_full_precision_on_gpus_unless_asked(spec, picture):
    plan = plan_of(spec, MeshRequest(prompt="", image=picture), GPU)
    assert plan.dtype == "float32"
    assert any(r.startswith("dtype float32: TripoSR runs in full precision") for r in plan.reasons)
    assert not any("asked for with --dtype" in r for r in plan.reasons)
    asked = plan_of(spec, MeshRequest(prompt="", image=picture, dtype="bfloat16"), GPU)
    assert asked.dtype == "bfloat16"


def _rgba(tmp_path, name="object.png", alpha=255, opaque=False):
    """A red box on a transparent background (or, `opaque`, on black with no transparency at all)."""
    pixels = np.zeros((60, 80, 4), np.uint8)
    pixels[..., 3] = 255 if opaque else 0
    pixels[10:50, 20:60] = [200, 30, 30, alpha]
    path = tmp_path / name
    Image.fromarray(pixels).save(path)
    return str(path)


@pytest.mark.parametrize(("changes", "message"), [
    ({"prompt": "a chair"}, "not both"),
    ({"image": None}, "missing the input"),
    ({"mc_resolution": 8}, "--resolution 8"),
    ({"mc_resolution": 1024}, "--resolution 1024"),
    ({"chunk_size": -1}, "--chunk-size"),
    ({"mc_threshold": 0.0}, "--threshold"),
    ({"foreground_ratio": 1.5}, "--foreground-ratio"),
    ({"up": "x"}, "--up x"),
    ({"output_format": "fbx"}, "--format fbx"),
    ({"keep_image": True}, "--keep-image"),
])
def test_bad_requests_are_usage_errors(spec, tmp_path, changes, message):
    request = MeshRequest(**{"prompt": "", "image": _rgba(tmp_path), **changes})
    with pytest.raises(UsageError, match=message):
        engine.validate(request, spec)


def test_bad_image_files_are_input_errors(spec, tmp_path):
    with pytest.raises(InputError, match="no such file"):
        engine.validate(MeshRequest(prompt="", image=str(tmp_path / "missing.png")), spec)
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(InputError, match="not a readable image"):
        engine.validate(MeshRequest(prompt="", image=str(tmp_path / "notes.png")), spec)


def test_rgb_input_needs_background_removal_or_the_flag(spec, tmp_path, monkeypatch):
    monkeypatch.setattr(preprocess, "background_remover_available", lambda: False)
    opaque = _rgba(tmp_path, opaque=True)
    with pytest.raises(UsageError, match="rembg") as caught:
        engine.validate(MeshRequest(prompt="", image=opaque), spec)
    assert "--no-remove-bg" in caught.value.hint
    engine.validate(MeshRequest(prompt="", image=opaque, remove_background=False), spec)
    engine.validate(MeshRequest(prompt="", image=_rgba(tmp_path, "cut.png", alpha=200)), spec)  # has alpha
    with pytest.raises(UsageError, match="drawn from the prompt"):
        engine.validate(MeshRequest(prompt="a chair"), spec)


def test_output_extension_rules():
    request = MeshRequest(prompt="", image="x.png")
    assert engine.output_extension(request, None) == ".glb"
    assert engine.output_extension(request, "a/{seed}.ply") == ".ply"
    assert engine.output_extension(MeshRequest(prompt="", output_format="obj"), None) == ".obj"
    with pytest.raises(UsageError, match="--format obj but --output ends in .stl"):
        engine.check_output(MeshRequest(prompt="", output_format="obj"), "a.stl")
    with pytest.raises(UsageError, match="not a supported format"):
        engine.check_output(request, "a.fbx")


def test_resize_foreground_and_gray_composite_follow_the_official_rules():
    rgba = np.zeros((20, 30, 4), np.uint8)
    rgba[5:15, 10:14] = [255, 0, 0, 255]  # alpha box rows 5..14, cols 10..13
    framed = preprocess.resize_foreground(rgba, 0.85)
    # The crop drops the box's last row and column (9 x 3), pads to 9 x 9, then to int(9 / 0.85) = 10.
    assert framed.shape == (10, 10, 4)
    assert framed[..., 3].sum() // 255 == 9 * 3
    rows, cols = np.nonzero(framed[..., 3])
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (0, 8, 3, 5)
    gray = preprocess.composite_gray(framed)
    assert gray.dtype == np.uint8 and tuple(gray[9, 9]) == (127, 127, 127) and tuple(gray[0, 3]) == (255, 0, 0)
    with pytest.raises(InputError, match="fully transparent"):
        preprocess.resize_foreground(np.zeros((4, 4, 4), np.uint8))


def test_up_y_is_the_gltf_frame_a_rotation_of_the_native_one():
    # TripoSR: x towards the input camera, y image-right, z up. glTF: y up, the input view facing +Z, right = +X.
    mesh = trimesh.Trimesh([[1, 0, 0], [0, 1, 0], [0, 0, 1]], [[0, 1, 2]], process=False)
    turned = orient(mesh, "y")
    assert turned.vertices.tolist() == [[0, 0, 1], [1, 0, 0], [0, 1, 0]]
    assert np.allclose(turned.face_normals, [orient(trimesh.Trimesh([mesh.face_normals[0]]), "y").vertices[0]])
    assert orient(mesh, "z").vertices.tolist() == mesh.vertices.tolist()


def test_glb_carries_the_provenance_in_its_asset_extras(tmp_path):
    mesh = trimesh.creation.icosphere(subdivisions=1)
    mesh.visual.vertex_colors = np.tile([0.5, 0.25, 1.0], (len(mesh.vertices), 1))
    path = write_mesh(mesh, tmp_path / "ball.glb", {"model": "triposr", "seed": None})
    assert glb_extras(path) == {"stablekit": {"model": "triposr", "seed": None}}
    again = write_mesh(mesh, tmp_path / "ball.glb", {"model": "triposr", "seed": None})
    assert again.name == "ball-2.glb" and again.read_bytes() == path.read_bytes()
    loaded = trimesh.load(path, force="mesh")
    assert tuple(loaded.visual.vertex_colors[0]) == (128, 64, 255, 255)
