"""Start-up time of the CLI's fast paths, next to a bare interpreter, in one run.

    python benchmarks/startup.py [--runs 15] [--baseline FILE] [--save FILE]

Prints the median wall time of `python -c pass`, `stablekit --help` and `stablekit models list`, and the
CLI's overhead over the bare interpreter. With --baseline (a file written by --save) it prints the change
against it. Exit 1 when a command's median exceeds --limit seconds (0.3 s by default).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

COMMANDS = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "stablekit --help": [sys.executable, "-m", "stablekit", "--help"],
    "stablekit models list": [sys.executable, "-m", "stablekit", "models", "list"],
}


def median_seconds(argv: list[str], runs: int) -> float:
    subprocess.run(argv, capture_output=True, check=True)  # warm the file cache
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, capture_output=True, check=True)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--limit", type=float, default=0.3, help="seconds a CLI command's median may take")
    parser.add_argument("--baseline", help="JSON from an earlier --save, to compare against")
    parser.add_argument("--save", help="write this run's medians as JSON")
    args = parser.parse_args()
    results = {name: median_seconds(argv, args.runs) for name, argv in COMMANDS.items()}
    baseline = json.load(open(args.baseline)) if args.baseline else {}
    bare = results["python -c pass"]
    print(f"{'command':<24}{'median s':>10}{'over python':>13}{'baseline s':>12}{'change':>9}")
    for name, seconds in results.items():
        base = baseline.get(name)
        change = f"{(seconds / base - 1) * 100:+.0f}%" if base else ""
        print(f"{name:<24}{seconds:>10.3f}{seconds - bare:>13.3f}{base or float('nan'):>12.3f}{change:>9}")
    if args.save:
        with open(args.save, "w") as handle:
            json.dump(results, handle, indent=2)
    slow = [name for name in results if name.startswith("stablekit") and results[name] > args.limit]
    if slow:
        print(f"over {args.limit} s: {', '.join(slow)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
