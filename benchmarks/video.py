"""Video writer speed per format on SVD-XT's output (25 frames at 1024x576, 7 fps), in one run.

    python benchmarks/video.py [--runs 3] [--baseline FILE] [--save FILE]

Writes the same synthetic clip (a moving gradient with grain, like a decoded video) as MP4 (H.264 CRF 18),
GIF, WebP and a folder of PNG frames, and, as the reference every SVD example uses, diffusers'
`export_to_video` (imageio-ffmpeg's defaults) on the same frames. Prints the median seconds and the file
size per format; with --baseline (a file written by --save) the change against it. The model's own time is
not measured here: on the tiny model it means nothing.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

FRAMES, WIDTH, HEIGHT, FPS = 25, 1024, 576, 7
CASES = {"mp4": "clip.mp4", "gif": "clip.gif", "webp": "clip.webp", "png frames": "clip"}


def clip():
    import numpy as np

    y, x = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    rng = np.random.default_rng(0)
    frames = []
    for i in range(FRAMES):
        shift = i * 12
        rgb = np.stack([(x + shift) / WIDTH, y / HEIGHT, 0.5 + 0.5 * np.sin((x - y + shift) / 60)], axis=-1)
        rgb += rng.normal(0, 0.01, rgb.shape)  # light grain, as decoded frames have
        frames.append((np.clip(rgb, 0, 1) * 255).round().astype(np.uint8))
    return np.stack(frames)


def size_of(path: Path) -> int:
    return sum(p.stat().st_size for p in path.iterdir()) if path.is_dir() else path.stat().st_size


def measure(write, runs: int) -> tuple[float, int]:
    samples, size = [], 0
    with tempfile.TemporaryDirectory() as folder:
        for i in range(runs + 1):  # the first run warms caches (ffmpeg's binary, Pillow's plugins) and is dropped
            start = time.perf_counter()
            path = write(Path(folder) / str(i))
            samples.append(time.perf_counter() - start)
            size = size_of(path)
    return statistics.median(samples[1:]), size


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--baseline", help="JSON from an earlier --save, to compare against")
    parser.add_argument("--save", help="write this run's medians as JSON")
    args = parser.parse_args()

    from stablekit.loading import quiet_libraries
    from stablekit.writers.video import write_video

    quiet_libraries()
    from diffusers.utils import export_to_video

    data = clip()
    comment = json.dumps({"model": "svd-xt", "seed": 0, "num_frames": FRAMES, "fps": FPS})
    writers = {name: (lambda folder, name=name: write_video(data, FPS, folder / CASES[name], comment=comment).path)
               for name in CASES}

    def diffusers_mp4(folder: Path) -> Path:
        folder.mkdir()
        path = folder / "export.mp4"
        export_to_video(list(data.astype("float32") / 255), str(path), fps=FPS)
        return path

    writers["diffusers export_to_video"] = diffusers_mp4
    results = {}
    for name, write in writers.items():
        seconds, size = measure(write, args.runs)
        results[name] = {"seconds": seconds, "bytes": size}
    baseline = json.load(open(args.baseline)) if args.baseline else {}
    print(f"{FRAMES} frames {WIDTH}x{HEIGHT} at {FPS} fps, median of {args.runs}")
    print(f"{'format':<28}{'median s':>10}{'size KiB':>10}{'baseline s':>12}{'change':>9}")
    for name, result in results.items():
        base = baseline.get(name, {}).get("seconds")
        change = f"{(result['seconds'] / base - 1) * 100:+.0f}%" if base else ""
        print(f"{name:<28}{result['seconds']:>10.3f}{result['bytes'] / 1024:>10.0f}"
              f"{base or float('nan'):>12.3f}{change:>9}")
    if args.save:
        with open(args.save, "w") as handle:
            json.dump(results, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
