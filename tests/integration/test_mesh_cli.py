"""`stablekit mesh` end to end on tiny-triposr (and tiny-sd for text-to-3D), through the CLI (in-process; one run in
a real process)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import trimesh
from PIL import Image

from conftest import run_cli, run_process
from stablekit.writers.mesh import glb_extras

TINY = ["--model", "tiny-triposr"]
# A stand-in for rembg (the real one downloads its model on first use): the object is what differs from the
# corner pixel's colour. The empty onnxruntime package is what stablekit checks for beside rembg.
FAKE_REMBG = '''
import numpy as np
from PIL import Image

def new_session(name):
    assert name == "u2net", name
    return name

def remove(image, session=None):
    rgb = np.asarray(image.convert("RGB"))
    alpha = (np.abs(rgb.astype(int) - rgb[0, 0]).sum(-1) > 30) * 255
    return Image.fromarray(np.dstack([rgb, alpha.astype(np.uint8)]), "RGBA")
'''


@pytest.fixture
def picture(tmp_path) -> Path:
    """80x60 RGBA: two coloured boxes with soft edges on a transparent background."""
    pixels = np.zeros((60, 80, 4), np.uint8)
    pixels[10:50, 20:60] = [200, 30, 30, 255]
    pixels[20:40, 30:70] = [20, 200, 40, 255]
    pixels[9, 20:60, 3] = 128
    path = tmp_path / "chair.png"
    Image.fromarray(pixels).save(path)
    return path


def one_line_error(result, code: int, *needles: str) -> None:
    assert result.returncode == code, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    errors = [i for i, line in enumerate(lines) if line.startswith("Error: ")]
    assert len(errors) == 1 and len(lines) - errors[0] <= 2, result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in result.stderr, result.stderr


def mesh_run(*args: str, env: dict | None = None, runner=run_cli) -> list[dict]:
    result = runner("mesh", *TINY, "--json", *args, env=env)
    assert result.returncode == 0, result.stderr
    assert "Warning" not in result.stderr and "Traceback" not in result.stderr, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def load(path: str) -> trimesh.Trimesh:
    return trimesh.load(path, force="mesh", process=False)


@pytest.mark.parametrize("extension", [".glb", ".obj", ".ply"])
def test_formats_reload_with_faces_colours_and_sidecar(picture, tmp_path, extension):
    [record] = mesh_run("--image", str(picture), "-o", f"out/chair{extension}", "-d", str(tmp_path))
    path = Path(record["path"])
    assert path == tmp_path / "out" / f"chair{extension}" and record["kind"] == "mesh"
    mesh = load(str(path))
    assert len(mesh.faces) == record["faces"] > 100 and len(mesh.vertices) == record["vertices"]
    assert mesh.visual.kind == "vertex"
    colors = mesh.visual.vertex_colors
    assert colors.shape == (len(mesh.vertices), 4) and len(np.unique(colors[:, :3], axis=0)) > 10
    assert np.abs(mesh.vertices).max() <= 0.87 + 1e-6  # TripoSR's cube of half-size 0.87
    sidecar = json.loads(Path(record["sidecar"]).read_text())
    assert Path(record["sidecar"]).name == f"chair{extension}.json" and sidecar["output"] == path.name
    params = sidecar["parameters"]
    assert sidecar["model"]["id"] == "tiny-triposr" and params["up"] == "y" and params["mc_resolution"] == 64
    assert params["preprocessing"] == "alpha, foreground ratio 0.85, gray background"
    assert params["vertices"] == record["vertices"] and params["format"] == extension[1:]
    assert sidecar["device_plan"]["device"] == "cpu" and sidecar["versions"]["torch"]
    if extension == ".glb":
        extras = glb_extras(path)["stablekit"]
        assert extras["model"] == "tiny-triposr" and extras["up"] == "y" and extras["faces"] == record["faces"]


def test_same_input_same_mesh_and_the_up_axis(picture, tmp_path):
    """Determinism (byte-identical GLB), and --up z is TripoSR's frame, --up y (default) its rotation to glTF's."""
    [first] = mesh_run("--image", str(picture), "-d", str(tmp_path / "a"))
    [second] = mesh_run("--image", str(picture), "-d", str(tmp_path / "b"), runner=run_process)  # another process
    assert Path(first["path"]).name == "chair.glb"
    assert Path(first["path"]).read_bytes() == Path(second["path"]).read_bytes()
    [native] = mesh_run("--image", str(picture), "--up", "z", "-d", str(tmp_path / "c"))
    y_up, z_up = load(first["path"]), load(native["path"])
    assert np.array_equal(y_up.faces, z_up.faces)
    assert np.allclose(y_up.vertices, z_up.vertices[:, [1, 2, 0]])  # (x, y, z) -> (y, z, x)
    assert np.array_equal(y_up.visual.vertex_colors, z_up.visual.vertex_colors)
    assert glb_extras(Path(native["path"]))["stablekit"]["up"] == "z"

    # The native frame is exactly what the library extracts: same vertices as stablekit.models.triposr gives.
    import torch

    from stablekit.models import triposr

    model = triposr.from_pretrained(json.loads(Path(native["sidecar"]).read_text())["model"]["snapshot"])
    with Image.open(picture) as image:
        pixels, _ = triposr.prepare(image, remove_bg=False)
    with torch.inference_mode():
        code = model(triposr.model_input(pixels, model.config.cond_image_size))[0]
        mesh = triposr.extract_mesh(model.query, code, 64)
    assert np.allclose(mesh.vertices, z_up.vertices, atol=1e-6)


def test_stl_has_geometry_only(picture, tmp_path):
    result = run_cli("mesh", *TINY, "--image", str(picture), "--format", "stl", "-d", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "STL stores no colours" in result.stderr
    mesh = load(result.stdout.strip())
    assert result.stdout.strip().endswith("chair.stl") and len(mesh.faces) > 100


def test_text_to_3d_draws_the_image_first_and_keeps_it(tmp_path):
    records = mesh_run("a wooden chair, white background", "--image-model", "tiny-sd", "--seed", "3",
                       "--keep-image", "--no-remove-bg", "-d", str(tmp_path))
    image, mesh = records
    assert image["kind"] == "image" and mesh["kind"] == "mesh" and mesh["seed"] == 3
    assert Path(image["path"]) == tmp_path / "a-wooden-chair-white-background-3.png"
    assert Path(mesh["path"]) == tmp_path / "a-wooden-chair-white-background-3.glb"
    with Image.open(image["path"]) as drawn:
        assert drawn.size == (64, 64)
    assert len(load(mesh["path"]).faces) > 100
    params = json.loads(Path(mesh["sidecar"]).read_text())["parameters"]
    assert params["image_parameters"]["model"] == "tiny-sd" and params["image_parameters"]["seed"] == 3
    assert params["image_parameters"]["output"] == "{prompt}-{seed}.png" and params["preprocessing"] == "as is"

    # Without --keep-image only the mesh is left behind.
    [alone] = mesh_run("a wooden chair, white background", "--image-model", "tiny-sd", "--seed", "3",
                       "--no-remove-bg", "-d", str(tmp_path / "alone"))
    assert sorted(p.name for p in (tmp_path / "alone").iterdir()) == [
        "a-wooden-chair-white-background-3.glb", "a-wooden-chair-white-background-3.glb.json"]
    again, kept = load(alone["path"]), load(mesh["path"])  # the same seed draws the same image, so the same mesh
    assert np.array_equal(again.vertices, kept.vertices) and np.array_equal(again.faces, kept.faces)


def test_rgb_input_goes_through_background_removal(tmp_path):
    fake = tmp_path / "fake"
    (fake / "rembg").mkdir(parents=True)
    (fake / "rembg" / "__init__.py").write_text(FAKE_REMBG)
    (fake / "onnxruntime").mkdir()
    (fake / "onnxruntime" / "__init__.py").write_text("")
    photo = np.full((60, 80, 3), 240, np.uint8)
    photo[15:45, 25:55] = [30, 60, 200]
    Image.fromarray(photo).save(tmp_path / "photo.jpg", quality=95)
    [record] = mesh_run("--image", str(tmp_path / "photo.jpg"), "-d", str(tmp_path), env={"PYTHONPATH": str(fake)})
    params = json.loads(Path(record["sidecar"]).read_text())["parameters"]
    assert params["preprocessing"] == "rembg u2net, foreground ratio 0.85, gray background"


def test_rgb_input_without_rembg_is_refused_up_front(tmp_path):
    Image.fromarray(np.full((40, 40, 3), 200, np.uint8)).save(tmp_path / "photo.png")
    result = run_cli("mesh", *TINY, "--image", str(tmp_path / "photo.png"), "-d", str(tmp_path))
    one_line_error(result, 2, "rembg", "--no-remove-bg")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photo.png", "stablekit-home"]
    with_flag = run_cli("mesh", *TINY, "--image", str(tmp_path / "photo.png"), "--no-remove-bg", "-q",
                        "-d", str(tmp_path))
    assert with_flag.returncode == 0, with_flag.stderr
    assert with_flag.stdout.strip().endswith("photo.glb")


@pytest.mark.parametrize(("args", "needles"), [
    (["--image", "missing.png"], ["no such file"]),
    (["--image", "{notes}"], ["not a readable image"]),
    (["--image", "{blank}"], ["fully transparent"]),
    (["a chair", "--image", "{picture}"], ["not both"]),
    ([], ["missing the input"]),
    (["--image", "{picture}", "--resolution", "4"], ["--resolution 4"]),
    (["--image", "{picture}", "-o", "chair.fbx"], ["not a supported format"]),
    (["--image", "{picture}", "--up", "x"], ["--up"]),
    (["--image", "{picture}", "--model", "tiny-sd"], ["not for mesh"]),
])
def test_bad_input_is_a_one_line_usage_error(picture, tmp_path, args, needles):
    (tmp_path / "notes.png").write_text("not a picture")
    Image.fromarray(np.zeros((8, 8, 4), np.uint8)).save(tmp_path / "blank.png")
    names = {"picture": str(picture), "notes": str(tmp_path / "notes.png"), "blank": str(tmp_path / "blank.png")}
    argv = [arg.format(**names) for arg in args]
    before = sorted(p.name for p in tmp_path.iterdir())
    result = run_cli("mesh", *TINY, *argv, "-d", str(tmp_path), cwd=tmp_path)
    one_line_error(result, 2, *needles)
    assert sorted(p.name for p in tmp_path.iterdir()) == before, "nothing may be written"


def test_no_surface_is_a_clear_error(picture, tmp_path):
    result = run_cli("mesh", *TINY, "--image", str(picture), "--threshold", "1e30", "-d", str(tmp_path / "out"))
    one_line_error(result, 1, "no surface", "below the iso-level")
    assert not (tmp_path / "out").exists()


def test_dry_run_shows_the_mesh_plan_without_weights(picture):
    result = run_cli("mesh", "--image", str(picture), "--dry-run", "--json")
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert plan["model"] == "triposr" and plan["files"]["status"] == "missing"
    reasons = plan["plan"]["reasons"]
    assert "mesh grid 128^3" in " ".join(reasons) and "queries of 8192 points" in " ".join(reasons)
    text = run_cli("mesh", "a chair", "--dry-run", "--image-model", "tiny-sd", "--no-remove-bg")
    assert text.returncode == 0, text.stderr
    assert text.stdout.count("model     ") == 2 and "tiny-sd" in text.stdout and "triposr" in text.stdout


def test_help_imports_no_ml_library():
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", "import sys; from stablekit.cli import main\n"
                             "try:\n main(['mesh', '--help'])\nexcept SystemExit: pass\n"
                             "print(sorted(m for m in ('torch', 'trimesh', 'numpy', 'PIL', 'mcubes') "
                             "if m in sys.modules))"], capture_output=True, text=True)
    assert result.stdout.strip().splitlines()[-1] == "[]", result.stdout
