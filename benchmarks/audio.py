"""Audio writer speed per format on Stable Audio Open's longest clip (47.55 s, stereo, 44.1 kHz), in one run.

    python benchmarks/audio.py [--runs 5] [--baseline FILE] [--save FILE]

Writes a hot clip (peak beyond full scale, so the full-scale rule runs) as 16-bit WAV, 24-bit WAV, 32-bit
float WAV, 16-bit FLAC and OGG Vorbis (which is decoded after encoding to check for overshoot) and prints
the median seconds per file and the real-time factor. With --baseline (a file written by --save) it prints
the change against it. The model's own time is not measured here: on the tiny model it means nothing.
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

SECONDS, RATE = 47.55, 44100
CASES = {"wav 16": (".wav", "16"), "wav 24": (".wav", "24"), "wav 32f": (".wav", "32f"),
         "flac 16": (".flac", "16"), "ogg vorbis": (".ogg", None)}


def clip():
    import numpy as np

    t = np.arange(round(SECONDS * RATE)) / RATE
    rng = np.random.default_rng(0)
    left = np.sin(2 * np.pi * 220 * t) + 0.3 * rng.standard_normal(t.size)
    right = np.sin(2 * np.pi * 330 * t) + 0.3 * rng.standard_normal(t.size)
    return (np.stack([left, right], axis=1) * 1.2).astype(np.float32)


def median_seconds(data, extension: str, bit_depth: str | None, runs: int) -> float:
    from stablekit.writers.audio import audio_format, write_audio

    fmt = audio_format(extension, bit_depth)
    samples = []
    with tempfile.TemporaryDirectory() as folder:
        for i in range(runs + 1):  # the first run warms libsndfile up and is dropped
            start = time.perf_counter()
            write_audio(data, RATE, Path(folder) / f"b{i}{extension}", fmt, tags={"title": "benchmark"})
            samples.append(time.perf_counter() - start)
    return statistics.median(samples[1:])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--baseline", help="JSON from an earlier --save, to compare against")
    parser.add_argument("--save", help="write this run's medians as JSON")
    args = parser.parse_args()
    data = clip()
    results = {name: median_seconds(data, ext, depth, args.runs) for name, (ext, depth) in CASES.items()}
    baseline = json.load(open(args.baseline)) if args.baseline else {}
    print(f"{'format':<12}{'median s':>10}{'x realtime':>12}{'baseline s':>12}{'change':>9}")
    for name, seconds in results.items():
        base = baseline.get(name)
        change = f"{(seconds / base - 1) * 100:+.0f}%" if base else ""
        print(f"{name:<12}{seconds:>10.3f}{SECONDS / seconds:>12.0f}{base or float('nan'):>12.3f}{change:>9}")
    if args.save:
        with open(args.save, "w") as handle:
            json.dump(results, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
