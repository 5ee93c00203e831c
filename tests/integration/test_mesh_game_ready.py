"""`stablekit mesh --texture / --faces / --turntable` end to end on tiny-triposr, through the real CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh
from mesh_checks import check_gltf_rules, khronos_validator, texture_errors, validate_with_khronos
from PIL import Image

from conftest import run_cli

TINY = ["--model", "tiny-triposr"]


@pytest.fixture
def picture(tmp_path) -> Path:
    pixels = np.zeros((60, 80, 4), np.uint8)
    pixels[10:50, 20:60] = [200, 30, 30, 255]
    pixels[20:40, 30:70] = [20, 200, 40, 255]
    path = tmp_path / "chair.png"
    Image.fromarray(pixels).save(path)
    return path


def mesh_run(*args: str) -> list[dict]:
    result = run_cli("mesh", *TINY, "--json", *args)
    assert result.returncode == 0, result.stderr
    assert "Warning" not in result.stderr and "Traceback" not in result.stderr, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def colour_field(sidecar: str, picture: Path):
    """The model's colour field for `picture`, taking points in the file's frame (--up y)."""
    from stablekit.models import triposr

    model = triposr.from_pretrained(json.loads(Path(sidecar).read_text())["model"]["snapshot"])
    with Image.open(picture) as image:
        pixels, _ = triposr.prepare(image, remove_bg=False)
    with torch.inference_mode():
        code = model(triposr.model_input(pixels, model.config.cond_image_size))[0]

    def colors_at(points: np.ndarray) -> np.ndarray:
        native = np.asarray(points, dtype=np.float32)[:, [2, 0, 1]]  # --up y wrote (x, y, z) as (y, z, x)
        return triposr.vertex_colors(model.query, code, native)

    return colors_at


def test_textured_glb_reloads_with_the_colour_field_in_its_texels(picture, tmp_path):
    [record] = mesh_run("--image", str(picture), "--texture", "256", "--resolution", "48", "-d", str(tmp_path))
    path = Path(record["path"])
    assert path.name == "chair.glb" and sorted(p.name for p in path.parent.glob("chair*")) == [
        "chair.glb", "chair.glb.json", "chair.png"]  # chair.png is the input: the texture is inside the GLB
    tree = check_gltf_rules(path.read_bytes())
    [primitive] = tree["meshes"][0]["primitives"]
    assert {"POSITION", "NORMAL", "TEXCOORD_0"} <= set(primitive["attributes"]) and "COLOR_0" not in primitive[
        "attributes"]
    [material] = tree["materials"]
    assert material["pbrMetallicRoughness"]["metallicFactor"] == 0.0
    mesh = trimesh.load(path, force="mesh", process=False)
    assert mesh.visual.kind == "texture" and mesh.visual.material.baseColorTexture.size == (256, 256)
    assert len(mesh.faces) == record["faces"] and len(mesh.vertices) == record["vertices"]
    errors, interior = texture_errors(mesh, colour_field(record["sidecar"], picture))
    assert interior > 500 and errors.max() <= 2.0, (errors.max(), interior)
    params = json.loads(Path(record["sidecar"]).read_text())["parameters"]
    assert params["texture_size"] == 256 and params["texture"]["size"] == 256 and params["texture"]["charts"] > 1


def test_face_budget_turntable_and_the_same_bytes_twice(picture, tmp_path):
    args = ["--image", str(picture), "--faces", "500", "--texture", "256", "--turntable", "spin.mp4",
            "--turntable-views", "12", "--turntable-size", "96"]
    first = mesh_run(*args, "-d", str(tmp_path / "a"))
    second = mesh_run(*args, "-d", str(tmp_path / "b"))
    mesh_record, video_record = first
    assert mesh_record["kind"] == "mesh" and video_record["kind"] == "turntable"
    assert 450 <= mesh_record["faces"] <= 550
    for one, two in zip(first, second, strict=True):
        assert Path(one["path"]).read_bytes() == Path(two["path"]).read_bytes(), one["path"]
    mesh = trimesh.load(mesh_record["path"], force="mesh", process=False)
    assert mesh.visual.kind == "texture" and 450 <= len(mesh.faces) <= 550
    errors, _ = texture_errors(mesh, colour_field(mesh_record["sidecar"], picture))
    assert errors.max() <= 2.0
    params = json.loads(Path(mesh_record["sidecar"]).read_text())["parameters"]
    assert params["face_count"] == 500 and params["decimation"]["target_faces"] == 500
    assert params["decimation"]["faces_before"] > 10_000 and params["faces"] == mesh_record["faces"]

    import imageio_ffmpeg

    video = Path(video_record["path"])
    assert video == tmp_path / "a" / "spin.mp4" and video_record["frames"] == 12
    reader = imageio_ffmpeg.read_frames(str(video))
    meta = next(reader)
    frames = [np.frombuffer(f, np.uint8).reshape(96, 96, 3) for f in reader]
    assert meta["size"] == (96, 96) and len(frames) == 12
    assert np.abs(frames[0].astype(int) - frames[3]).mean() > 5  # a quarter turn later the view has changed
    video_params = json.loads(Path(video_record["sidecar"]).read_text())["parameters"]
    assert video_params["mesh_output"] == "chair.glb" and video_params["turntable_views"] == 12


def test_textured_obj_comes_with_its_material_and_texture(picture, tmp_path):
    args = ["--image", str(picture), "-o", "chair.obj", "--faces", "300", "--texture", "128", "-d", str(tmp_path)]
    [record] = mesh_run(*args)
    assert [Path(f).name for f in record["files"]] == ["chair.mtl", "chair-texture.png"]
    mesh = trimesh.load(record["path"], force="mesh", process=False)
    assert mesh.visual.kind == "texture" and np.asarray(mesh.visual.material.image).shape[:2] == (128, 128)
    sidecar = json.loads(Path(record["sidecar"]).read_text())
    assert sidecar["parameters"]["companions"] == ["chair.mtl", "chair-texture.png"]
    [again] = mesh_run(*args)
    assert Path(again["path"]).name == "chair-2.obj" and "mtllib chair-2.mtl" in Path(again["path"]).read_text()
    assert (tmp_path / "chair-2-texture.png").read_bytes() == (tmp_path / "chair-texture.png").read_bytes()
    [replaced] = mesh_run(*args, "--overwrite")
    assert Path(replaced["path"]).name == "chair.obj"
    assert sorted(p.name for p in tmp_path.glob("chair*")) == [
        "chair-2-texture.png", "chair-2.mtl", "chair-2.obj", "chair-2.obj.json", "chair-texture.png", "chair.mtl",
        "chair.obj", "chair.obj.json", "chair.png"]


@pytest.mark.parametrize(("args", "needles"), [
    (["--texture", "256", "-o", "chair.ply"], ["--texture needs a .glb or .obj output", "PLY"]),
    (["--texture", "16"], ["--texture 16"]),
    (["--faces", "2"], ["--faces 2"]),
    (["--turntable", "spin.avi"], ["--turntable spin.avi", ".mp4"]),
    (["--turntable", "{colour}.gif"], ["unknown field"]),
    (["--turntable", "spin.gif", "--turntable-views", "0"], ["--turntable-views 0"]),
])
def test_bad_game_ready_options_are_one_line_usage_errors(picture, tmp_path, args, needles):
    result = run_cli("mesh", *TINY, "--image", str(picture), *args, "-d", str(tmp_path / "out"))
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("Error: ") and len(lines) <= 2 and "Traceback" not in result.stderr
    for needle in needles:
        assert needle in result.stderr
    assert not (tmp_path / "out").exists()


def test_khronos_validator_finds_no_errors(picture, tmp_path, request):
    """The official validator (npm gltf-validator) on a textured and a vertex-coloured GLB; skipped without node."""
    cache = getattr(request.config, "cache", None)  # absent with -p no:cacheprovider
    package = khronos_validator(cache.mkdir("gltf-validator") if cache else tmp_path / "gltf-validator")
    if package is None:
        pytest.skip("node and npm (with a reachable npm registry) are needed for the Khronos glTF validator")
    [textured] = mesh_run("--image", str(picture), "--faces", "400", "--texture", "128", "-d", str(tmp_path / "t"))
    [coloured] = mesh_run("--image", str(picture), "--resolution", "32", "-d", str(tmp_path / "c"))
    for record in (textured, coloured):
        report = validate_with_khronos(package, Path(record["path"]))
        issues = report["issues"]
        assert issues["numErrors"] == 0 and issues["numWarnings"] == 0, json.dumps(issues["messages"], indent=1)
        assert report["info"]["generator"].startswith("stablekit")
