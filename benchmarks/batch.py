"""`stablekit batch` against 20 separate `stablekit image` processes and one `--prompts-file` run, in one run.

    python benchmarks/batch.py [--jobs 20] [--runs 3] [--baseline FILE] [--save FILE]
    python benchmarks/batch.py --engine ray [--ray-jobs 40] [--workers 2]     (local against Ray: batch_ray.py)

All three render the same tiny-sd images (the same prompts and seeds, 64x64, 2 steps, CPU, float32) into
fresh folders, as whole processes: batch and the prompts file load the model once, separate processes pay
start-up and loading every time. Also times a mixed-modality job file (image, text-to-video, audio, mesh and
text lines: five models). Prints median wall times side by side, with the CPU time of the processes (which a
busy machine inflates less); exit 1 unless batch's wall time is at least --speedup (5) times shorter than the
separate processes' and within --margin (10 %) of the prompts file's.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SEED = 100


def timed(argv: list[str], env: dict) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one process: CPU time shows the work itself when the machine is busy."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    result = subprocess.run(argv, capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        raise SystemExit(f"failed: {' '.join(argv)}\n{result.stderr}")
    return elapsed, (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)


def stablekit(*args: str) -> list[str]:
    return [sys.executable, "-m", "stablekit", *args]


def fresh(work: Path, name: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=f"{name}-", dir=work))


def mixed_file(work: Path) -> Path:
    """One line per modality; the video draws its first frame with the image lines' model."""
    import numpy as np
    from PIL import Image

    pixels = np.zeros((60, 80, 4), np.uint8)
    pixels[10:50, 20:60] = [200, 30, 30, 255]
    picture = work / "chair.png"
    Image.fromarray(pixels).save(picture)
    lines = [{"command": "image", "prompt": "a fox", "model": "tiny-sd", "id": "fox"},
             {"command": "image", "prompt": "an owl", "model": "tiny-sd", "id": "owl"},
             {"command": "video", "prompt": "a boat", "model": "tiny-svd", "image_model": "tiny-sd", "id": "boat"},
             {"command": "audio", "prompt": "waves", "model": "tiny-audio", "id": "waves"},
             {"command": "mesh", "image": str(picture), "model": "tiny-triposr", "id": "chair"},
             {"command": "text", "prompt": "hello", "model": "tiny-lm", "max_new_tokens": 16, "id": "hello"}]
    path = work / "mixed.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--runs", type=int, default=3, help="runs of batch, prompts file and mixed file (median)")
    parser.add_argument("--work-dir", default=os.path.join(tempfile.gettempdir(), "stablekit-bench-batch"))
    parser.add_argument("--speedup", type=float, default=5.0, help="least acceptable batch vs separate processes")
    parser.add_argument("--margin", type=float, default=0.10, help="largest acceptable batch vs prompts file")
    parser.add_argument("--baseline", help="JSON from an earlier --save")
    parser.add_argument("--save", help="write this run's figures as JSON")
    parser.add_argument("--engine", choices=("local", "ray"), default="local",
                        help="ray: local against Ray workers instead (see benchmarks/batch_ray.py)")
    parser.add_argument("--ray-jobs", type=int, default=40, help="jobs of the --engine ray comparison")
    parser.add_argument("--workers", type=int, default=2, help="Ray workers of the --engine ray comparison")
    args = parser.parse_args()
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "STABLEKIT_HOME": str(work / "home"), "HF_HUB_OFFLINE": "1"}
    if args.engine == "ray":
        import batch_ray

        return batch_ray.main(args, env, work)
    prompts = [f"picture number {i}" for i in range(args.jobs)]
    jobs = work / "jobs.jsonl"
    jobs.write_text("".join(json.dumps({"command": "image", "prompt": p, "model": "tiny-sd", "seed": SEED + i})
                            + "\n" for i, p in enumerate(prompts)))
    prompts_file = work / "prompts.txt"
    prompts_file.write_text("\n".join(prompts) + "\n")
    mixed = mixed_file(work)

    def batch_run() -> tuple[float, float]:
        return timed(stablekit("batch", str(jobs), "-q", "-d", str(fresh(work, "batch"))), env)

    def prompts_run() -> tuple[float, float]:
        return timed(stablekit("image", "--prompts-file", str(prompts_file), "-m", "tiny-sd", "--seed", str(SEED),
                               "-q", "-d", str(fresh(work, "prompts"))), env)

    def separate_run() -> tuple[float, float]:
        out = fresh(work, "separate")
        runs = [timed(stablekit("image", p, "-m", "tiny-sd", "--seed", str(SEED + i), "-q", "-d", str(out)), env)
                for i, p in enumerate(prompts)]
        return sum(wall for wall, _ in runs), sum(cpu for _, cpu in runs)

    def mixed_run() -> tuple[float, float]:
        return timed(stablekit("batch", str(mixed), "-q", "-d", str(fresh(work, "mixed"))), env)

    timed(stablekit("image", "warm-up", "-m", "tiny-sd", "-q", "-d", str(work / "warm")), env)  # build, cache
    mixed_run()  # builds the other tiny models once
    samples: dict[str, list[tuple[float, float]]] = {"batch": [], "prompts_file": [], "mixed_file": []}
    for run in range(args.runs):  # alternate, so a busy moment on the machine hits both sides alike
        for name, fn in (("batch", batch_run), ("prompts_file", prompts_run))[:: 1 if run % 2 == 0 else -1]:
            samples[name].append(fn())
        samples["mixed_file"].append(mixed_run())
    samples["separate_processes"] = [separate_run()]
    results = {name: statistics.median(wall for wall, _ in values) for name, values in samples.items()}
    cpu = {name: statistics.median(seconds for _, seconds in values) for name, values in samples.items()}
    results["cpu"] = cpu
    results["speedup"] = results["separate_processes"] / results["batch"]
    results["vs_prompts_file"] = results["batch"] / results["prompts_file"] - 1
    n = args.jobs
    print(f"{n} tiny-sd jobs (64x64, 2 steps, CPU), median of {args.runs} (separate processes: one run of {n}):")
    print(f"  {'':<36}{'wall':>9}{'per job':>10}{'CPU':>9}")
    for name, label in (("separate_processes", f"{n} separate stablekit image"), ("prompts_file",
                        "stablekit image --prompts-file"), ("batch", "stablekit batch")):
        print(f"  {label:<36}{results[name]:>7.1f} s{results[name] / n:>8.2f} s{cpu[name]:>7.1f} s")
    print(f"  batch: {results['speedup']:.1f}x faster than separate processes "
          f"({cpu['separate_processes'] / cpu['batch']:.1f}x less CPU), "
          f"{results['vs_prompts_file'] * 100:+.1f} % against the prompts file "
          f"({(cpu['batch'] / cpu['prompts_file'] - 1) * 100:+.1f} % CPU)")
    print(f"mixed file (2 image, text-to-video, audio, mesh, text lines; 5 models): {results['mixed_file']:.1f} s "
          f"({cpu['mixed_file']:.1f} s CPU)")
    if args.baseline:
        baseline = json.loads(Path(args.baseline).read_text())
        for name in ("batch", "prompts_file", "mixed_file"):
            if name in baseline:
                print(f"{name}: {results[name]:.1f} s vs baseline {baseline[name]:.1f} s "
                      f"({(results[name] / baseline[name] - 1) * 100:+.1f} %)")
    if args.save:
        Path(args.save).write_text(json.dumps(results, indent=2))
    failed = []
    if results["speedup"] < args.speedup:
        failed.append(f"batch is {results['speedup']:.1f}x faster than separate processes (< {args.speedup:g}x)")
    if results["vs_prompts_file"] > args.margin:
        failed.append(f"batch is {results['vs_prompts_file']:.0%} slower than the prompts file (> {args.margin:.0%})")
    for line in failed:
        print(line, file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
