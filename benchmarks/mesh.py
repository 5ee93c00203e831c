"""TripoSR's costs: image -> triplane, grid -> mesh and the finishing steps, reduced and full-size architectures.

    python benchmarks/mesh.py [--sizes reduced,full] [--device cpu] [--resolution R] [--chunk-size N]
                              [--faces N] [--texture N] [--views N] [--view-size N]
                              [--threads N] [--runs 1] [--baseline FILE] [--save FILE]

Random weights, so nothing is downloaded: "reduced" is tiny-triposr (built by stablekit.testing.tiny, 64 px input,
16x16 triplanes), "full" the released architecture (419 M parameters, 512 px input, 64x64 triplanes) with
PyTorch's default initialisation. Times: the forward pass (image -> triplane), the density query on the
R^3 grid, and marching cubes + welding + vertex colours. Random full-size weights rarely put a surface at
TripoSR's density 25, so the full-size mesh is extracted at the grid's median density (printed) instead:
the marching-cubes time then covers a real, large surface. The grid and chunk size default to what
`stablekit mesh` plans for the device (128^3 and 8192 on a CPU, 256^3 on a GPU).
The finishing steps of `--faces`, `--texture` and `--turntable` follow: quadric decimation to --faces (default
10000; 0 skips it), the texture bake at --texture (default 1024: xatlas unwrap, texel rasterisation, colour
queries, dilation) and a turntable of --views (30) at --view-size (256) rasterised from the baked mesh.
With --baseline (a file written by --save) it prints the change against it. The load average is printed
before and after: CPU figures taken beside other busy processes are slower, and far slower with more torch
threads than idle cores (--threads 1 is steadier on a shared machine).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from stablekit.engines.mesh import CPU_CHUNK, RESOLUTION
from stablekit.models import triposr
from stablekit.models.triposr.finish import color_field, finish_mesh
from stablekit.models.triposr.isosurface import THRESHOLD
from stablekit.models.triposr.turntable import render_turntable
from stablekit.testing import tiny
from stablekit.testing import triposr as tiny_triposr

OFFICIAL_SIZES = {"cond_image_size": 512, "tokenizer": {"plane_size": 32, "num_channels": 1024},
                  "backbone": {"num_attention_heads": 16, "attention_head_dim": 64, "num_layers": 16,
                               "cross_attention_dim": 768},
                  "post_processor": {"in_channels": 1024, "out_channels": 40},
                  "decoder": {"in_channels": 120, "n_neurons": 64, "n_hidden_layers": 9, "activation": "silu"}}


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


def measure(model, device: str, resolution: int, chunk: int, runs: int, warm: bool,
            finish: argparse.Namespace) -> dict[str, float]:
    pixels = picture()
    times: dict[str, list[float]] = {"image_to_triplane_s": [], "density_grid_s": [], "surface_s": [],
                                     "decimate_s": [], "bake_s": [], "turntable_s": []}
    faces = final_faces = 0
    level = THRESHOLD
    with torch.inference_mode():
        images = triposr.model_input(pixels, model.config.cond_image_size).to(device)
        if warm:
            model(images)
        for _ in range(runs):
            sync(device)
            start = time.perf_counter()
            code = model(images)[0]
            sync(device)
            middle = time.perf_counter()
            density = triposr.density_grid(model.query, code, resolution, chunk)
            sync(device)
            end = time.perf_counter()
            if not density.min() < level < density.max():
                level = float(np.median(density))
            vertices, tris = triposr.marching_cubes(density, level, model.config.renderer.radius)
            mesh = triposr.build_mesh(model.query, code, vertices, tris, chunk)
            sync(device)
            times["image_to_triplane_s"].append(middle - start)
            times["density_grid_s"].append(end - middle)
            times["surface_s"].append(time.perf_counter() - end)
            faces = len(mesh.faces)
            colors_at = color_field(model.query, code, chunk)
            start = time.perf_counter()
            if finish.faces:
                mesh, _ = finish_mesh(mesh, colors_at, face_count=finish.faces)
            middle = time.perf_counter()
            if finish.texture:
                mesh, _ = finish_mesh(mesh, colors_at, texture_size=finish.texture)
            sync(device)
            end = time.perf_counter()
            if finish.views:
                render_turntable(mesh, finish.views, finish.view_size)
            times["decimate_s"].append(middle - start)
            times["bake_s"].append(end - middle)
            times["turntable_s"].append(time.perf_counter() - end)
            final_faces = len(mesh.faces)
    result = {name: statistics.median(values) for name, values in times.items()}
    result["grid_to_mesh_s"] = result["density_grid_s"] + result["surface_s"]
    return {**result, "faces": faces, "final_faces": final_faces, "level": level}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="reduced,full", help="comma-separated: reduced, full")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--resolution", type=int, help="grid points per axis  [default: the device's plan]")
    parser.add_argument("--chunk-size", type=int, help="points per density query  [default: the device's plan]")
    parser.add_argument("--faces", type=int, default=10000, help="face budget before baking (0: keep all)")
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
    baseline = json.load(open(args.baseline)) if args.baseline else {}
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} "
          f"threads, device {args.device}, grid {resolution}^3, chunks of {chunk}; load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as folder:
        for size in args.sizes.split(","):
            start = time.perf_counter()
            model = (reduced_model(args.device, Path(folder)) if size == "reduced" else full_size_model(args.device))
            built = time.perf_counter() - start
            params = sum(p.numel() for p in model.parameters()) / 1e6
            results[size] = measure(model, args.device, resolution, chunk, args.runs, warm=size == "reduced",
                                    finish=args)
            print(f"{size}: {params:.1f} M parameters (built in {built:.1f} s); surface at density "
                  f"{results[size]['level']:.3g}, {results[size]['faces']} faces, {results[size]['final_faces']} "
                  f"after --faces {args.faces}; texture {args.texture}^2, {args.views} views at {args.view_size}^2")
            del model
    print(f"load average {os.getloadavg()[0]:.1f} at the end")
    print(f"{'size':<9}{'figure':<22}{'seconds':>10}{'baseline':>10}{'change':>9}")
    for size, figures in results.items():
        for name in ("image_to_triplane_s", "grid_to_mesh_s", "density_grid_s", "surface_s", "decimate_s", "bake_s",
                     "turntable_s"):
            base = baseline.get(size, {}).get(name)
            change = f"{(figures[name] / base - 1) * 100:+.0f}%" if base else ""
            print(f"{size:<9}{name:<22}{figures[name]:>10.3f}{base or float('nan'):>10.3f}{change:>9}")
    if args.save:
        with open(args.save, "w") as handle:
            json.dump(results, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
