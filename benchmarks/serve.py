"""Ten `stablekit image` calls in a row, each a fresh process, with and without `stablekit serve`, in one run.

    python benchmarks/serve.py [--calls 10] [--models tiny,sd-turbo-arch] [--save FILE]

Without a server every call imports torch and diffusers and loads the model; with one, the first call loads it
in the server and the other nine only start a client (no torch) and send the job: each call starts in a copy of
the server's warm client (stablekit.launch), so it skips its imports too. Prints each side's total wall time, the
speed-up, the client's own start-up per call (a call's wall time less the time the server spent on its job, read
from the server's log) and how many calls started warm. `tiny` is tiny-sd at 64x64, 2 steps; `sd-turbo-arch` is
the full-size SD-Turbo architecture with random weights at 512x512, 1 step (built once into --work-dir, 5.2 GB;
see benchmarks/image.py). A bare interpreter's start is printed too: on a busy machine every figure grows.
With PYTHONDONTWRITEBYTECODE=1 set (as on the development machine) every call compiles stablekit's own modules
from source, which an installed package never does; --bytecode keeps every module's bytecode under --work-dir
(PYTHONPYCACHEPREFIX, filled by the first call) to measure what an installed stablekit starts in.
Exit 1 when the speed-up is under --min-speedup (5x) or the median client start-up is over --max-startup (0.3 s).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from image import build_sd_turbo_architecture  # noqa: E402


def call(argv: list[str], env: dict) -> float:
    start = time.perf_counter()
    result = subprocess.run(argv, capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"failed: {' '.join(argv)}\n{result.stderr}")
    return elapsed


def calls(model: str, size: int, steps: int, count: int, env: dict, out: Path) -> list[float]:
    return [call([sys.executable, "-m", "stablekit", "image", "a lighthouse at dusk", "--model", model, "--width",
                  str(size), "--height", str(size), "--steps", str(steps), "--guidance", "0", "--seed", str(i),
                  "--device", "cpu", "-q", "--overwrite", "-o", str(out / f"{i}.png")], env)
            for i in range(count)]


def start_server(env: dict, log: Path) -> tuple[subprocess.Popen, float]:
    started = time.perf_counter()
    with open(log, "w") as stream:
        process = subprocess.Popen([sys.executable, "-m", "stablekit", "serve", "--keep-alive", "0"], stdout=stream,
                                   stderr=subprocess.STDOUT, env=env, start_new_session=True)
    ps = [sys.executable, "-m", "stablekit", "ps", "--json"]
    while True:
        if process.poll() is not None:
            raise SystemExit(f"the server exited:\n{log.read_text()}")
        answer = subprocess.run(ps, capture_output=True, text=True, env=env)
        if (answer.returncode == 0 and json.loads(answer.stdout).get("running")
                and "warm client ready" in log.read_text()):  # calls start in its copies from here on
            return process, time.perf_counter() - started
        time.sleep(0.2)


def compare(name: str, model: str, size: int, steps: int, count: int, env: dict, work: Path) -> dict:
    out = work / "out"
    out.mkdir(exist_ok=True)
    calls(model, size, steps, 1, {**env, "STABLEKIT_SERVER": "0"}, out)  # warm the file cache
    here = calls(model, size, steps, count, {**env, "STABLEKIT_SERVER": "0"}, out)
    log = work / f"server-{name}.log"
    process, start_up = start_server(env, log)
    try:
        served = calls(model, size, steps, count, env, out)
    finally:
        process.terminate()
        process.wait(120)
    jobs = [float(s) for s in re.findall(r"job \d+: done in ([\d.]+) s", log.read_text())]
    if len(jobs) != count:
        raise SystemExit(f"expected {count} jobs in the server's log, found {len(jobs)}:\n{log.read_text()}")
    clients = [wall - job for wall, job in zip(served, jobs, strict=True)]
    warm = len(re.findall(r"client \d+ \(image\): exit 0", log.read_text()))
    figures = {"calls": count, "here_total_s": sum(here), "served_total_s": sum(served),
               "speedup": sum(here) / sum(served), "server_start_s": start_up, "first_served_call_s": served[0],
               "here_median_call_s": statistics.median(here), "served_median_call_s": statistics.median(served[1:]),
               "client_startup_median_s": statistics.median(clients[1:]), "client_startup_max_s": max(clients[1:]),
               "started_warm": warm}
    print(f"{name:<15}{sum(here):>10.1f}{sum(served):>10.1f}{figures['speedup']:>9.1f}x"
          f"{figures['here_median_call_s']:>10.2f}{figures['served_median_call_s']:>10.2f}"
          f"{figures['client_startup_median_s']:>10.3f}{figures['client_startup_max_s']:>9.3f}{warm:>6}", flush=True)
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--models", default="tiny")
    parser.add_argument("--work-dir", default=os.path.join(tempfile.gettempdir(), "stablekit-bench"))
    parser.add_argument("--min-speedup", type=float, default=5.0)
    parser.add_argument("--max-startup", type=float, default=0.3, help="seconds; median client start-up")
    parser.add_argument("--bytecode", action="store_true",
                        help="cache compiled modules under --work-dir even where PYTHONDONTWRITEBYTECODE is set")
    parser.add_argument("--save", help="write this run's figures as JSON")
    args = parser.parse_args()
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    home = work / "serve-home"  # its own home: a server the user runs elsewhere is never touched
    env = {**os.environ, "STABLEKIT_HOME": str(home), "HF_HUB_OFFLINE": "1", "STABLEKIT_PROGRESS_SECONDS": "1000"}
    if args.bytecode:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
    compiled = "cached" if not env.get("PYTHONDONTWRITEBYTECODE") else "compiled from source by each call"
    os.environ.update(STABLEKIT_HOME=str(home))
    from stablekit import hub
    from stablekit.registry import load_registry

    tiny_sd = hub.ensure_local(load_registry().get("tiny-sd"))
    cases = {"tiny": ("tiny-sd", 64, 2), "sd-turbo-arch": (None, 512, 1)}
    bare = statistics.median(call([sys.executable, "-c", "pass"], env) for _ in range(5))
    print(f"{args.calls} calls, each a fresh process (totals and medians in seconds); a bare `python -c pass` "
          f"takes {bare:.3f} s here; bytecode {compiled}; load average {os.getloadavg()[0]:.1f}")
    print(f"{'model':<15}{'here':>10}{'served':>10}{'speedup':>10}{'call here':>10}{'call srv':>10}"
          f"{'client':>10}{'max':>9}{'warm':>6}")
    results = {}
    for name in args.models.split(","):
        model, size, steps = cases[name]
        if model is None:
            model = str(build_sd_turbo_architecture(work / "sd-turbo-arch", tiny_sd))
        results[name] = compare(name, model, size, steps, args.calls, env, work)
    if args.save:
        Path(args.save).write_text(json.dumps({"python_bare_s": bare, "bytecode": compiled,
                                               "load_average": os.getloadavg(), **results}, indent=2))
    failed = [f"{name}: {figures['speedup']:.1f}x < {args.min_speedup}x" for name, figures in results.items()
              if figures["speedup"] < args.min_speedup]
    failed += [f"{name}: client start-up {figures['client_startup_median_s']:.3f} s > {args.max_startup} s"
               for name, figures in results.items() if figures["client_startup_median_s"] > args.max_startup]
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")
    for line in failed:
        print(line, file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
