"""TripoSR's costs, stage by stage: image -> triplane -> mesh, then --faces, --texture and --turntable.

    python benchmarks/mesh.py [--sizes reduced,full] [--device cpu] [--resolution R] [--chunk-size N]
                              [--faces 0,20000,5000] [--texture N] [--views N] [--view-size N]
                              [--threads N] [--runs 1] [--baseline FILE] [--save FILE]

Random weights, so nothing is downloaded: "reduced" is tiny-triposr (built by stablekit.testing.tiny, 64 px input,
16x16 triplanes), "full" the released architecture (419 M parameters, 512 px input, 64x64 triplanes) with
PyTorch's default initialisation. The grid and chunk size default to what `stablekit mesh` plans for the device
(128^3 and 8192 on a CPU, 256^3 on a GPU).

Network: the forward pass (image -> triplane), the density query on the R^3 grid, marching cubes, and welding +
vertex colours. Random full-size weights rarely put a surface at TripoSR's density 25, so that mesh is extracted
at the grid's median density (printed): the times cover a real grid, but the surface is noise.

Finishing: a noise surface is no measure of --faces, --texture or --turntable (decimating it keeps the noise, and
xatlas was still unwrapping 10 k faces of it after 15 minutes), so these run on a stand-in: a smooth closed
surface with a handle and four legs (genus 1), extracted by the same marching cubes at the same grid from an
analytic density: 50 k faces at 128^3, the size of a real object's surface there (its marching cubes and
welding + vertex colours are timed as the network's surface is). Everything that reads the model still reads
the network of the size measured: the stand-in's vertex colours, the colours at the new vertices after
decimation and the colour of every baked texel are triplane queries of the scene code just computed. For
each face budget in --faces (0: the stand-in as extracted) the library's own functions run as `stablekit mesh`
runs them (finish_mesh, then write_mesh, render_turntable and write_video), with their inner steps timed
separately: decimation and the vertex colour query; xatlas unwrap, texel rasterisation, the texel colour query
and dilation of the --texture bake; GLB and OBJ (+ MTL + PNG) writing; --views turntable views at --view-size
(rasterising the textured mesh, as stablekit does) and their MP4.

With --baseline (a file written by --save) it prints the change against it. The load average is printed
before and after: CPU figures taken beside other busy processes are slower, and far slower with more torch
threads than idle cores (--threads 1 is steadier on a shared machine).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from stablekit.engines.mesh import CPU_CHUNK, RESOLUTION
from stablekit.models import triposr
from stablekit.models.triposr import bake as bake_module
from stablekit.models.triposr import finish as finish_module
from stablekit.models.triposr.finish import color_field, finish_mesh
from stablekit.models.triposr.isosurface import THRESHOLD, grid_axis
from stablekit.models.triposr.turntable import FPS, render_turntable
from stablekit.testing import tiny
from stablekit.testing import triposr as tiny_triposr
from stablekit.writers.mesh import orient, write_mesh, written_files
from stablekit.writers.video import write_video

OFFICIAL_SIZES = {"cond_image_size": 512, "tokenizer": {"plane_size": 32, "num_channels": 1024},
                  "backbone": {"num_attention_heads": 16, "attention_head_dim": 64, "num_layers": 16,
                               "cross_attention_dim": 768},
                  "post_processor": {"in_channels": 1024, "out_channels": 40},
                  "decoder": {"in_channels": 120, "n_neurons": 64, "n_hidden_layers": 9, "activation": "silu"}}
NETWORK = ("image_to_triplane_s", "density_grid_s", "marching_cubes_s", "weld_and_colour_s")
FINISH = ("decimate_s", "vertex_colours_s", "unwrap_s", "rasterise_texels_s", "texel_colours_s", "dilate_s",
          "bake_rest_s", "write_glb_s", "write_obj_s", "turntable_s", "turntable_mp4_s")


def full_size_model(device: str) -> triposr.TripoSR:
    import yaml

    data = yaml.safe_load(tiny_triposr._TRIPOSR_YAML)
    for key, value in OFFICIAL_SIZES.items():
        data[key] = {**data[key], **value} if isinstance(value, dict) else value
    data["image_tokenizer"]["pretrained_model_name_or_path"] = "facebook/dino-vitb16"
    data["backbone"]["in_channels"] = 1024
    torch.manual_seed(0)
    return triposr.build(triposr.parse_config(data, Path(".")), device=device)


def reduced_model(device: str, folder: Path) -> triposr.TripoSR:
    return triposr.from_pretrained(tiny.build("triposr", folder / "tiny-triposr"), device=device)


def picture() -> np.ndarray:
    pixels = np.zeros((300, 400, 4), np.uint8)
    pixels[50:250, 100:300] = [200, 30, 30, 255]
    pixels[100:200, 150:350] = [20, 200, 40, 255]
    return triposr.prepare(Image.fromarray(pixels), remove_bg=False)[0]


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _smooth_union(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    h = np.clip(0.5 + 0.5 * (b - a) / k, 0.0, 1.0)
    return b * (1 - h) + a * h - k * h * (1 - h)


def _capsule(points: np.ndarray, a: tuple, b: tuple, radius: float) -> np.ndarray:
    a_, ba = np.asarray(a, np.float32), np.subtract(b, a).astype(np.float32)
    along = np.clip((points - a_) @ ba / (ba @ ba), 0.0, 1.0)
    return np.linalg.norm(points - a_ - along[..., None] * ba, axis=-1) - radius


def stand_in_density(resolution: int, radius: float) -> np.ndarray:
    """A density like TripoSR's (high inside, 25 on the surface) on the same grid: a wavy body, a handle through
    it and four legs, smoothly joined; about 1.0 x 0.9 x 1.6 world units, inside the +-0.87 cube."""
    axis = grid_axis(resolution, radius).numpy().astype(np.float32) / 1.25  # the shape below, 1.25x larger
    x, y, z = np.meshgrid(axis, axis, axis, indexing="ij")
    points = np.stack((x, y, z), axis=-1)
    body = (np.sqrt((x / 0.30) ** 2 + (y / 0.34) ** 2 + ((z - 0.05) / 0.30) ** 2) - 1.0) * 0.30
    body += 0.02 * np.sin(9 * x) * np.sin(8 * y) * np.sin(7 * z)
    ring = np.sqrt(x**2 + (z - 0.32) ** 2) - 0.25
    shape = _smooth_union(body, np.sqrt(ring**2 + y**2) - 0.06, 0.06)
    for sx in (-1, 1):
        for sy in (-1, 1):
            leg = _capsule(points, (0.15 * sx, 0.18 * sy, -0.1), (0.25 * sx, 0.3 * sy, -0.5), 0.05)
            shape = _smooth_union(shape, leg, 0.05)
    return (THRESHOLD * np.exp(-shape * 1.25 / 0.02)).astype(np.float32)


class Stopwatch:
    """Seconds per label, summed: around a block, or around every call of a function (the library's own)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    @contextlib.contextmanager
    def time(self, label: str, device: str = "cpu"):
        sync(device)
        start = time.perf_counter()
        try:
            yield
        finally:
            sync(device)
            self.seconds[label] += time.perf_counter() - start

    def wrap(self, function, label: str, device: str = "cpu"):
        def timed(*args, **kwargs):
            with self.time(label, device):
                return function(*args, **kwargs)

        return timed

    @contextlib.contextmanager
    def calls(self, module, names: dict[str, str]):
        """While inside: calls of module.NAME (as the module's own code makes them) are timed under names[NAME]."""
        originals = {name: getattr(module, name) for name in names}
        try:
            for name, label in names.items():
                setattr(module, name, self.wrap(originals[name], label))
            yield
        finally:
            for name, function in originals.items():
                setattr(module, name, function)


def network_stages(model, device: str, resolution: int, chunk: int) -> tuple[dict, torch.Tensor, dict]:
    """(figures, scene code, facts): forward pass, density grid, marching cubes, welding + vertex colours."""
    watch = Stopwatch()
    level = THRESHOLD
    with torch.inference_mode():
        images = triposr.model_input(picture(), model.config.cond_image_size).to(device)
        with watch.time("image_to_triplane_s", device):
            code = model(images)[0]
        with watch.time("density_grid_s", device):
            density = triposr.density_grid(model.query, code, resolution, chunk)
        if not density.min() < level < density.max():
            level = float(np.median(density))
        with watch.time("marching_cubes_s"):
            vertices, faces = triposr.marching_cubes(density, level, model.config.renderer.radius)
        with watch.time("weld_and_colour_s", device):
            mesh = triposr.build_mesh(model.query, code, vertices, faces, chunk)
    return dict(watch.seconds), code, {"level": level, "faces": len(mesh.faces), "vertices": len(mesh.vertices)}


def stand_in(model, code: torch.Tensor, density: np.ndarray, chunk: int, device: str) -> tuple[object, dict]:
    """The smooth stand-in surface through the library's marching cubes and welding, coloured by the network:
    (mesh, seconds of each, as the network's own surface is timed)."""
    watch = Stopwatch()
    with watch.time("marching_cubes_s"):
        vertices, faces = triposr.marching_cubes(density, THRESHOLD, model.config.renderer.radius)
    with torch.inference_mode(), watch.time("weld_and_colour_s", device):
        mesh = triposr.build_mesh(model.query, code, vertices, faces, chunk)
    return mesh, dict(watch.seconds)


def finishing(dense, colors_at, budget: int, args: argparse.Namespace, folder: Path, device: str) -> dict:
    """--faces budget (0: none), --texture, writing and --turntable on `dense`, as `stablekit mesh` runs them."""
    watch = Stopwatch()
    mesh = dense
    if budget:
        with watch.calls(finish_module, {"decimate": "decimate_s"}):
            mesh, _ = finish_mesh(dense, watch.wrap(colors_at, "vertex_colours_s", device), face_count=budget)
    facts: dict = {"faces": len(mesh.faces), "vertices": len(mesh.vertices)}
    if args.texture:
        with watch.time("bake_s"), watch.calls(bake_module, {"unwrap": "unwrap_s", "texel_points":
                                                             "rasterise_texels_s", "dilate": "dilate_s"}):
            mesh, details = finish_mesh(mesh, watch.wrap(colors_at, "texel_colours_s", device),
                                        texture_size=args.texture)
        texture = details["texture"]
        facts.update(charts=texture["charts"], coverage=texture["coverage"],
                     texels=round(texture["coverage"] * args.texture**2))
        parts = ("unwrap_s", "rasterise_texels_s", "texel_colours_s", "dilate_s")
        watch.seconds["bake_rest_s"] = watch.seconds["bake_s"] - sum(watch.seconds[p] for p in parts)
    metadata = {"command": "mesh", "model": "benchmark", "face_count": budget or None, "texture_size": args.texture}
    for extension in (".glb", ".obj"):
        with watch.time(f"write_{extension[1:]}_s"):
            path = write_mesh(orient(mesh, "y"), folder / f"faces-{budget}{extension}", metadata, overwrite=True)
        facts[f"{extension[1:]}_bytes"] = sum(f.stat().st_size for f in written_files(mesh, path))
    if args.views:
        with watch.time("turntable_s"):
            frames = render_turntable(mesh, args.views, args.view_size)
        with watch.time("turntable_mp4_s"):
            write_video(frames, FPS, folder / f"faces-{budget}.mp4", overwrite=True)
    return {**watch.seconds, **facts}


def warm_up(folder: Path) -> None:
    """One small pass through the finishing steps: imports and first-call costs stay out of the figures."""
    import trimesh

    ball = trimesh.creation.icosphere(subdivisions=3, radius=0.5)

    def colours(points):
        return np.clip(np.asarray(points) + 0.5, 0.0, 1.0)

    mesh, _ = finish_mesh(ball, colours, face_count=200, texture_size=64)
    write_mesh(orient(mesh, "y"), folder / "warm.glb", overwrite=True)
    write_video(render_turntable(mesh, 2, 32), FPS, folder / "warm.mp4", overwrite=True)


def measure(model, device: str, resolution: int, chunk: int, args: argparse.Namespace, budgets: list[int],
            folder: Path, warm: bool) -> dict:
    samples: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    facts: dict[str, dict] = {}
    if warm:
        network_stages(model, device, resolution, chunk)
    density = stand_in_density(resolution, model.config.renderer.radius)
    for _ in range(args.runs):
        figures, code, facts["network"] = network_stages(model, device, resolution, chunk)
        for name, value in figures.items():
            samples["network"][name].append(value)
        dense, figures = stand_in(model, code, density, chunk, device)
        for name, value in figures.items():
            samples["stand-in"][name].append(value)
        facts["stand-in"] = {"faces": len(dense.faces), "vertices": len(dense.vertices),
                             "watertight": bool(dense.is_watertight), "genus": 1 - dense.euler_number // 2}
        colors_at = color_field(model.query, code, chunk)
        for budget in budgets:
            figures = finishing(dense, colors_at, budget, args, folder, device)
            for name, value in figures.items():
                samples[f"faces {budget or 'all'}"][name].append(value)
    return {group: {name: statistics.median(values) for name, values in figures.items()} | facts.get(group, {})
            for group, figures in samples.items()}


def print_table(results: dict, baseline: dict) -> None:
    print(f"{'size':<9}{'step':<12}{'figure':<22}{'seconds':>10}{'baseline':>10}{'change':>9}")
    for size, groups in results.items():
        if size == "setup":
            continue
        for group, figures in groups.items():
            order = NETWORK if group in ("network", "stand-in") else ("bake_s", *FINISH)
            for name in order:
                if name not in figures:
                    continue
                base = baseline.get(size, {}).get(group, {}).get(name)
                change = f"{(figures[name] / base - 1) * 100:+.0f}%" if base else ""
                print(f"{size:<9}{group:<12}{name:<22}{figures[name]:>10.3f}{base or float('nan'):>10.3f}{change:>9}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="reduced,full", help="comma-separated: reduced, full")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--resolution", type=int, help="grid points per axis  [default: the device's plan]")
    parser.add_argument("--chunk-size", type=int, help="points per density query  [default: the device's plan]")
    parser.add_argument("--faces", default="0,20000,5000",
                        help="comma-separated face budgets for the stand-in (0: keep all its faces)")
    parser.add_argument("--texture", type=int, default=1024, help="texture size to bake (0: skip)")
    parser.add_argument("--views", type=int, default=30, help="turntable views (0: skip)")
    parser.add_argument("--view-size", type=int, default=256, help="turntable width and height")
    parser.add_argument("--threads", type=int, help="torch CPU threads  [default: torch's, one per core]")
    parser.add_argument("--runs", type=int, default=1, help="timed runs per size (the median is printed)")
    parser.add_argument("--baseline", help="JSON from an earlier --save, to compare against")
    parser.add_argument("--save", help="write this run's figures as JSON")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    kind = args.device.split(":")[0]
    resolution = args.resolution or RESOLUTION[kind]
    chunk = args.chunk_size if args.chunk_size is not None else (CPU_CHUNK if kind == "cpu" else 1 << 18)
    budgets = [int(b) for b in args.faces.split(",")]
    baseline = json.load(open(args.baseline)) if args.baseline else {}
    load_before = os.getloadavg()
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} "
          f"threads, device {args.device}, grid {resolution}^3, chunks of {chunk}; load average "
          f"{load_before[0]:.1f} on {os.cpu_count()} cores")
    results: dict = {}
    with tempfile.TemporaryDirectory() as folder:
        warm_up(Path(folder))
        for size in args.sizes.split(","):
            start = time.perf_counter()
            model = (reduced_model(args.device, Path(folder)) if size == "reduced" else full_size_model(args.device))
            built = time.perf_counter() - start
            params = sum(p.numel() for p in model.parameters()) / 1e6
            results[size] = measure(model, args.device, resolution, chunk, args, budgets, Path(folder),
                                    warm=size == "reduced")
            network, dense = results[size]["network"], results[size]["stand-in"]
            print(f"{size}: {params:.1f} M parameters (built in {built:.1f} s); network surface at density "
                  f"{network['level']:.3g}: {network['faces']} faces; stand-in: {dense['faces']} faces, "
                  f"{dense['vertices']} vertices, genus {dense['genus']}", flush=True)
            for budget in budgets:
                done = results[size][f"faces {budget or 'all'}"]
                print(f"  --faces {budget or '(none)'}: {done['faces']} faces"
                      + (f"; texture {args.texture}^2: {done['charts']} charts, {done['coverage']:.0%} covered "
                         f"({done['texels']} texels)" if args.texture else "")
                      + f"; GLB {done['glb_bytes'] / 1e6:.1f} MB", flush=True)
            del model
    load_after = os.getloadavg()
    print(f"load average {load_after[0]:.1f} at the end (1/5/15 min: "
          f"{', '.join(f'{v:.1f}' for v in load_after)})")
    print_table(results, baseline)
    results["setup"] = {"device": args.device, "threads": torch.get_num_threads(), "cores": os.cpu_count(),
                        "resolution": resolution, "chunk_size": chunk, "faces": budgets, "texture": args.texture,
                        "views": args.views, "view_size": args.view_size, "runs": args.runs,
                        "load_average_before": load_before[0], "load_average_after": load_after[0],
                        "torch": torch.__version__}
    if args.save:
        with open(args.save, "w") as handle:
            json.dump(results, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
