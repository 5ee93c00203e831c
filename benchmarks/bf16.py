"""bfloat16 on the CPU, every family at its released size (random weights): are the outputs sane?

    python benchmarks/bf16.py [--families sd-turbo,sdxl,sd3-no-t5,svd,stable-audio,stablelm-1.6b]
                              [--work-dir DIR] [--save FILE]

Issue 18 makes bfloat16 the default on CPUs that compute it in hardware. The tiny models' tests check that a bf16
run is planned, recorded and sane in every family; this checks the same at the released architectures' sizes,
where activations grow large enough to overflow if anything would. Each family's architecture is built once into
--work-dir (benchmarks/memory.py's builders: random weights, stored in 16 bit like the releases), then one small
job runs through the real command with `--dtype bfloat16` in a fresh process. A check passes when the command
exits 0, the sidecar records bfloat16, no NaN re-decode was needed, and the output is finite and not flat (an
image or frame with some variation, audio with some signal, text with tokens). TripoSR is not here: the planner
keeps it in float32 (its surface threshold needs the precision).

On a CPU without bf16 instructions torch emulates it, and slowly: on the development machine (AVX2) a 512-channel
3x3 convolution took 7.9 s in bf16 against 69 ms in float32, a 1280-wide linear layer 5x longer. There, run it
with `--size 64` and without stable-audio (its Oobleck decoder convolves the full 47 s window whatever the
length asked), for correctness only; the times printed are that machine's.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROMPT = "a lighthouse at dusk, oil painting"
# One small job per family: (command, arguments, output name). Sizes are small so emulated bf16 stays in minutes;
# the networks are full size.
SIZE = ["--width", "{size}", "--height", "{size}"]
SMALL_IMAGE = [PROMPT, *SIZE, "--steps", "1", "--guidance", "0"]
JOBS = {
    "sd-turbo": ("image", SMALL_IMAGE, "sd-turbo.png"),
    "sdxl": ("image", SMALL_IMAGE, "sdxl.png"),
    "sd3-no-t5": ("image", SMALL_IMAGE, "sd3.png"),
    "svd": ("video", ["--image", "{picture}", *SIZE, "--frames", "2", "--steps", "1", "--decode-chunk", "2",
                      "-f", "frames"], "svd"),
    "stable-audio": ("audio", ["rain on a tin roof", "--seconds", "2", "--steps", "1", "--guidance", "1",
                               "--bit-depth", "32f"], "audio.wav"),
    "stablelm-1.6b": ("text", ["Once upon a time", "--max-tokens", "4", "--temperature", "0"], None),
}


def check_output(command: str, path: Path | None, record: dict) -> str:
    """'ok', or what is wrong with the output a user would open."""
    import numpy as np

    if command == "text":
        return "ok" if record.get("completion_tokens", 0) > 0 and record.get("text", "").strip() else "no text"
    if command == "audio":
        import soundfile

        samples, _ = soundfile.read(path, dtype="float32")
        if not np.isfinite(samples).all():
            return "NaN/inf samples"
        return "ok" if np.abs(samples).max() > 0 else "silent"
    from PIL import Image

    files = sorted(path.glob("*.png")) if path.is_dir() else [path]
    if not files:
        return "no frames"
    for file in files:
        pixels = np.asarray(Image.open(file).convert("RGB"), dtype=np.float32)
        if pixels.max() <= 0 or pixels.std() == 0:
            return f"{file.name}: black or flat"
    return "ok"


def run_family(name: str, folder: Path, work: Path, env: dict, size: int, timeout: float) -> dict:
    from memory import picture

    command, args, output = JOBS[name]
    out = work / "out"
    out.mkdir(exist_ok=True)
    argv = [sys.executable, "-m", "stablekit", command, *(a.format(picture=picture(work), size=size) for a in args),
            "--model", str(folder), "--dtype", "bfloat16", "--device", "cpu", "--seed", "1", "--json",
            "--no-server"]
    if output:
        argv += ["--overwrite", "-o", str(out / output)]
    started = time.perf_counter()
    try:
        result = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:  # the command is killed with it
        return {"check": f"not finished in {timeout:g} s", "seconds": time.perf_counter() - started}
    seconds = time.perf_counter() - started
    if result.returncode:
        return {"check": f"exit {result.returncode}: {result.stderr.strip().splitlines()[-1:]}", "seconds": seconds}
    record = json.loads([line for line in result.stdout.splitlines() if line.startswith("{")][-1])
    path = Path(record["path"]) if record.get("path") else None
    if record.get("sidecar"):
        dtype = json.loads(Path(record["sidecar"]).read_text())["device_plan"]["dtype"]
    else:  # text keeps no sidecar: the plan line says it ("plan: MODEL on cpu, bfloat16, offload none, ...")
        dtype = next((line.split(", ")[1] for line in result.stderr.splitlines() if line.startswith("plan: ")), "?")
    check = check_output(command, path, record)
    if "decoding again in fp32" in result.stderr:
        check = "NaN decode (re-decoded in fp32)"
    if dtype != "bfloat16":
        check = f"ran in {dtype}"
    return {"check": check, "seconds": seconds, "dtype": dtype}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", default=",".join(JOBS))
    parser.add_argument("--work-dir", default=os.path.join(tempfile.gettempdir(), "stablekit-bf16"))
    parser.add_argument("--size", type=int, default=256,
                        help="image and video side in pixels (64 where bf16 is emulated: its convolutions are slow)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds one family's job may take")
    parser.add_argument("--save", help="write the results as JSON")
    args = parser.parse_args()
    # A SIGTERM (an outer `timeout`) becomes an exit, so subprocess.run kills the running command on its way out
    # instead of leaving it to run on.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    families = args.families.split(",")
    unknown = set(families) - set(JOBS)
    if unknown:
        raise SystemExit(f"unknown families: {', '.join(sorted(unknown))} (known: {', '.join(JOBS)})")
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "STABLEKIT_HOME": str(work / "home"), "HF_HOME": str(work / "hf-home"), "HF_HUB_OFFLINE": "1",
           "STABLEKIT_WEIGHTS_CACHE": "off"}
    os.environ.update(STABLEKIT_HOME=env["STABLEKIT_HOME"], HF_HOME=env["HF_HOME"])
    sys.path.insert(0, str(HERE))
    import memory

    from stablekit.cpu_features import native_bf16

    print(f"python {' '.join(sys.argv)}\nbf16 in hardware: {'yes' if native_bf16() else 'no (emulated)'}; "
          f"{os.cpu_count()} CPUs", flush=True)
    results = {}
    for name in families:
        folder = memory.build(name, work)
        results[name] = run_family(name, folder, work, env, args.size, args.timeout)
        print(f"{name:<16}{results[name]['seconds']:>8.1f} s  {results[name]['check']}", flush=True)
    if args.save:
        Path(args.save).write_text(json.dumps({"bf16_in_hardware": native_bf16(), "size": args.size,
                                               "results": results}, indent=2))
    return 0 if all(r["check"] == "ok" for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
