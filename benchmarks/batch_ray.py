"""`stablekit batch --engine ray` against `--engine local`: Ray's fixed start-up cost and its per-job overhead.

    python benchmarks/batch.py --engine ray [--ray-jobs 40] [--workers 2] [--runs 1]

Both engines render the same tiny-sd jobs (64x64, 2 steps, CPU) as whole processes into fresh folders, with
--json: each record's arrival is timed, so one run splits into start-up (until the first job is done, less
one job's time), the jobs (first to last record: the time per job once running) and shutdown (last record
to exit). Ray's run starts its own private instance on 127.0.0.1, as `--engine ray` without `--address`
does, and must leave no Ray process behind.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SEED = 100


def timed_records(argv: list[str], env: dict) -> tuple[float, list[float]]:
    """(wall seconds, seconds from the start at which each record arrived)."""
    start = time.perf_counter()
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    arrivals = [time.perf_counter() - start for line in process.stdout if line.strip()]
    stderr = process.stderr.read()
    process.wait()
    if process.returncode != 0:
        raise SystemExit(f"failed: {' '.join(argv)}\n{stderr}")
    return time.perf_counter() - start, arrivals


def split(wall: float, arrivals: list[float], workers: int) -> dict[str, float]:
    """Start-up, time per job (batch throughput and per worker) and shutdown of one run."""
    per_job = (arrivals[-1] - arrivals[0]) / (len(arrivals) - 1)
    return {"wall": wall, "startup": arrivals[0] - per_job * workers, "per_job": per_job,
            "per_job_per_worker": per_job * workers, "shutdown": wall - arrivals[-1]}


def main(args, env: dict, work: Path) -> int:
    n, workers = args.ray_jobs, args.workers
    before = ray_processes()
    jobs = work / f"ray-jobs-{n}.jsonl"
    jobs.write_text("".join(json.dumps({"command": "image", "prompt": f"picture number {i}", "model": "tiny-sd",
                                        "seed": SEED + i}) + "\n" for i in range(n)))
    stablekit = [sys.executable, "-m", "stablekit", "batch", str(jobs), "-q", "--json"]
    engines = {"local": ([], 1), "ray": (["--engine", "ray", "--workers", str(workers)], workers)}
    (work / "warm.jsonl").write_text(jobs.read_text().splitlines()[0] + "\n")
    subprocess.run([*stablekit[:4], str(work / "warm.jsonl"), "-q", "-d", tempfile.mkdtemp(dir=work)], env=env,
                   capture_output=True, check=True)  # builds the tiny model once
    samples: dict[str, list[dict[str, float]]] = {engine: [] for engine in engines}
    for run in range(args.runs):  # alternate, so a busy moment on the machine hits both sides alike
        for engine, (flags, count) in list(engines.items())[:: 1 if run % 2 == 0 else -1]:
            wall, arrivals = timed_records([*stablekit, "-d", tempfile.mkdtemp(dir=work), *flags], env)
            samples[engine].append(split(wall, arrivals, count))
    figures = {engine: {key: statistics.median(s[key] for s in runs) for key in runs[0]}
               for engine, runs in samples.items()}
    local, ray = figures["local"], figures["ray"]
    print(f"{n} tiny-sd jobs (64x64, 2 steps, CPU), whole processes, median of {args.runs}:")
    print(f"  {'':<34}{'local':>10}{f'ray, {workers} workers':>18}")
    rows = [("wall time", "wall", ".1f"), ("start-up (to the first job)", "startup", ".1f"),
            ("time per job (batch throughput)", "per_job", ".2f"),
            ("time per job, per worker", "per_job_per_worker", ".2f"), ("shutdown (last job to exit)", "shutdown",
                                                                         ".1f")]
    for label, key, spec in rows:
        print(f"  {label:<34}{format(local[key], spec):>9}s{format(ray[key], spec):>17}s")
    print(f"Ray's fixed cost: {ray['startup'] + ray['shutdown'] - local['startup'] - local['shutdown']:+.1f} s "
          f"(start-up {ray['startup'] - local['startup']:+.1f} s, shutdown {ray['shutdown'] - local['shutdown']:+.1f}"
          f" s); per-job overhead: {ray['per_job_per_worker'] - local['per_job_per_worker']:+.2f} s per job per "
          f"worker; {local['wall'] / ray['wall']:.2f}x the local engine's speed over {n} jobs")
    if args.save:
        Path(args.save).write_text(json.dumps(figures, indent=2))
    leftovers = ray_processes() - before
    if leftovers:
        print(f"Ray processes left running by the runs: {sorted(leftovers)}", file=sys.stderr)
        return 1
    return 0


def ray_processes() -> set[int]:
    """Ray's processes on this machine now (other users' included: compare before and after)."""
    found = subprocess.run(["pgrep", "-f", "ray::|/ray/core/src/ray/|ray/_private/|ray/dashboard/"],
                           capture_output=True, text=True).stdout
    return {int(pid) for pid in found.split()}
