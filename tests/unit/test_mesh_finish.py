"""The mesh finishing steps without a model: rasteriser, texture baking, face budget, turntable, textured writers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import trimesh
from mesh_checks import check_gltf_rules, texture_errors
from PIL import Image

from stablekit.errors import OutputError
from stablekit.models.triposr import raster, turntable
from stablekit.models.triposr.bake import bake_texture, dilate
from stablekit.models.triposr.decimate import decimate
from stablekit.models.triposr.finish import finish_mesh
from stablekit.writers import mesh as writer


def brute_force(corners: torch.Tensor, size: int, depth: torch.Tensor | None) -> torch.Tensor:
    """The face at every pixel centre, one triangle at a time over the whole image."""
    ys, xs = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    px, py = xs.reshape(-1).double(), ys.reshape(-1).double()
    best_z = torch.full((size * size,), math.inf, dtype=torch.float64)
    best = torch.full((size * size,), -1)
    for face in range(len(corners)):
        w = raster.barycentric(corners[face:face + 1].expand(len(px), 3, 2), px, py)
        z = torch.zeros(len(px), dtype=torch.float64) if depth is None else 1 / (w / depth[face]).sum(1)
        better = (w >= -1e-9).all(1) & (z < best_z)
        best_z[better], best[better] = z[better], face
    return best.view(size, size)


@pytest.mark.parametrize("with_depth", [False, True])
def test_rasteriser_matches_a_brute_force_one(with_depth):
    generator = torch.Generator().manual_seed(1)
    corners = torch.rand(60, 3, 2, generator=generator, dtype=torch.float64) * 40 - 4  # some cross the border
    depth = torch.rand(60, 3, generator=generator, dtype=torch.float64) + 0.5 if with_depth else None
    coverage = raster.rasterize(corners, 32, 32, depth, candidates=200)  # small batches: the batching is tested
    assert torch.equal(coverage.face, brute_force(corners, 32, depth))
    hit = coverage.covered
    assert torch.allclose(coverage.weights[hit].sum(-1), torch.ones(int(hit.sum()), dtype=torch.float64))
    assert (coverage.weights[hit] >= -1e-9).all() and (coverage.weights[~hit] == 0).all()


def test_two_triangles_sharing_an_edge_leave_no_crack():
    square = torch.tensor([[[0, 0], [16, 0], [16, 16]], [[0, 0], [16, 16], [0, 16]]], dtype=torch.float64)
    coverage = raster.rasterize(square, 16, 16)
    assert coverage.covered.all()
    assert (coverage.face.diagonal() == 0).all()  # centres on the diagonal belong to both: the lower index wins


def test_dilation_grows_the_charts_then_fills_the_rest():
    image = np.zeros((8, 8, 3))
    mask = np.zeros((8, 8), bool)
    image[3:5, 3:5], mask[3:5, 3:5] = [1.0, 0.5, 0.0], True
    grown = dilate(image, mask, steps=1)
    assert np.allclose(grown[2:6, 2:6], [1.0, 0.5, 0.0]) and np.allclose(grown[0, 0], [1.0, 0.5, 0.0])
    two = np.zeros((1, 6, 3))
    two[0, 0], two[0, 5] = [1, 0, 0], [0, 0, 1]
    spread = dilate(two, np.array([[True, False, False, False, False, True]]), steps=1)
    assert np.allclose(spread[0, 1], [1, 0, 0]) and np.allclose(spread[0, 4], [0, 0, 1])
    assert np.allclose(spread[0, 2], [0.5, 0, 0.5])  # not reached: the mean of what is covered


def sphere(subdivisions: int = 3) -> trimesh.Trimesh:
    ball = trimesh.creation.icosphere(subdivisions=subdivisions, radius=0.5)
    ball.vertices = ball.vertices * [1.0, 0.8, 1.2]  # not a perfect sphere: charts are not all alike
    return ball


def field(points: np.ndarray) -> np.ndarray:
    """A smooth colour field over space, like TripoSR's."""
    points = np.asarray(points, dtype=np.float64)
    return np.stack([0.5 + 0.45 * np.sin(3 * points[:, 0]), 0.5 + 0.45 * np.cos(2 * points[:, 1]),
                     0.5 + 0.4 * points[:, 2]], axis=1)


def test_baked_texels_hold_the_colour_field_at_their_surface_points():
    textured, facts = bake_texture(sphere(), 256, field)
    assert textured.visual.kind == "texture" and textured.visual.material.baseColorTexture.size == (256, 256)
    assert facts["charts"] >= 1 and facts["chart_gap_texels"] >= 2 and 0.3 < facts["coverage"] < 1
    errors, interior = texture_errors(textured, field)
    assert interior > 1000 and len(errors) == 400
    assert errors.max() <= 2.0, errors.max()
    # The split mesh keeps the unsplit one's smooth normals: seams do not show in shading.
    assert np.allclose(np.linalg.norm(textured.vertex_normals, axis=1), 1.0)
    again, _ = bake_texture(sphere(), 256, field)
    assert np.array_equal(np.asarray(again.visual.material.baseColorTexture),
                          np.asarray(textured.visual.material.baseColorTexture))


def test_a_face_budget_keeps_a_closed_mesh_closed():
    ball = sphere(4)  # 5120 faces
    for budget in (2000, 500, 100):
        simple, done = decimate(ball, budget)
        assert abs(len(simple.faces) - budget) <= 0.1 * budget and simple.is_watertight
        assert done.watertight_before and done.watertight and done.faces == len(simple.faces)
    same, done = decimate(ball, 10_000)
    assert len(same.faces) == len(ball.faces) and done.aggression is None


def test_finishing_recolours_the_decimated_vertices():
    ball = sphere(3)
    ball.visual.vertex_colors = field(ball.vertices)
    stages = []
    finished, details = finish_mesh(ball, field, face_count=300, stage=stages.append)
    assert abs(len(finished.faces) - 300) <= 30 and details["watertight"] and len(stages) == 1
    expected = np.round(field(finished.vertices) * 255)
    assert np.abs(finished.visual.vertex_colors[:, :3] - expected).max() <= 1


def test_turntable_views_go_round_the_object_from_the_input_view():
    ball = sphere(3)
    ball.visual.vertex_colors = np.where(ball.vertices[:, :1] > 0, [255, 0, 0, 255], [0, 0, 255, 255])
    frames = turntable.render_turntable(ball, views=4, size=64)
    assert frames.shape == (4, 64, 64, 3) and frames.dtype == np.uint8
    assert tuple(frames[0, 32, 32]) == (255, 0, 0)  # view 0 looks from +X: the red half, facing the camera
    assert tuple(frames[2, 32, 32]) == (0, 0, 255)  # half a turn later: the blue half
    assert tuple(frames[0, 0, 0]) == (255, 255, 255)  # white background
    assert np.array_equal(frames, turntable.render_turntable(ball, views=4, size=64))


def textured_box() -> trimesh.Trimesh:
    box = trimesh.creation.box()
    pixels = np.zeros((8, 8, 3), np.uint8)
    pixels[..., 0] = 200
    material = trimesh.visual.material.PBRMaterial(name="baked", baseColorTexture=Image.fromarray(pixels),
                                                   metallicFactor=0.0, roughnessFactor=1.0)
    uv = np.random.default_rng(0).random((len(box.vertices), 2))
    return trimesh.Trimesh(box.vertices, box.faces, visual=trimesh.visual.TextureVisuals(uv=uv, material=material),
                           process=False)


def test_textured_obj_is_three_files_named_and_numbered_together(tmp_path):
    mesh = textured_box()
    path = writer.write_mesh(mesh, tmp_path / "box.obj", {"model": "triposr"})
    files = writer.written_files(mesh, path)
    assert [f.name for f in files] == ["box.obj", "box.mtl", "box-texture.png"]
    assert "mtllib box.mtl" in path.read_text() and "map_Kd box-texture.png" in (tmp_path / "box.mtl").read_text()
    assert "Kd 1 1 1" in (tmp_path / "box.mtl").read_text()
    with Image.open(tmp_path / "box-texture.png") as png:
        assert png.text["stablekit"] == '{"model": "triposr"}'
    loaded = trimesh.load(path, force="mesh", process=False)
    assert loaded.visual.kind == "texture" and np.asarray(loaded.visual.material.image)[0, 0, 0] == 200
    (tmp_path / "other-2.mtl").write_text("someone else's")
    again = writer.write_mesh(mesh, tmp_path / "box.obj", {"model": "triposr"})
    assert again.name == "box-2.obj" and "mtllib box-2.mtl" in again.read_text()
    third = writer.write_mesh(mesh, tmp_path / "other.obj", {"model": "triposr"})  # other-2.mtl is taken
    assert third.name == "other.obj"
    (tmp_path / "taken-2.obj").touch()
    (tmp_path / "taken.mtl").touch()  # one of the three names is taken: the whole group moves on
    assert writer.write_mesh(mesh, tmp_path / "taken.obj").name == "taken-3.obj"
    (tmp_path / "box.mtl").write_text("stale")
    assert writer.write_mesh(mesh, tmp_path / "box.obj", overwrite=True) == path
    assert "map_Kd box-texture.png" in (tmp_path / "box.mtl").read_text()
    assert not list(tmp_path.glob(".*partial*"))


def test_a_failed_group_write_leaves_nothing(tmp_path, monkeypatch):
    mesh = textured_box()
    calls = []
    real_link = writer.os.link

    def failing_link(source, target):
        calls.append(target)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real_link(source, target)

    monkeypatch.setattr(writer.os, "link", failing_link)
    with pytest.raises(OutputError, match="the disk is full"):
        writer.write_mesh(mesh, tmp_path / "out" / "box.obj")
    assert list((tmp_path / "out").iterdir()) == []


def test_glb_marks_vertex_and_index_data_and_names_stablekit(tmp_path):
    for mesh in (textured_box(), trimesh.creation.icosphere(subdivisions=1)):
        tree = check_gltf_rules(writer.glb_bytes(mesh, {"model": "triposr"}))
        assert tree["asset"]["generator"] == writer.GENERATOR
        targets = [view.get("target") for view in tree["bufferViews"]]
        assert targets.count(writer.ELEMENT_ARRAY_BUFFER) == 1 and writer.ARRAY_BUFFER in targets
    with pytest.raises(ValueError, match="stores no texture"):
        writer.write_mesh(textured_box(), tmp_path / "box.ply")


def test_orienting_a_textured_mesh_keeps_uvs_and_normals():
    mesh = textured_box()
    turned = writer.orient(mesh, "y")
    assert np.array_equal(turned.visual.uv, mesh.visual.uv)
    assert np.allclose(turned.vertex_normals, mesh.vertex_normals[:, [1, 2, 0]])
