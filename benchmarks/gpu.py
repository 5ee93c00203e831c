"""SDXL at 1024x1024, 30 steps on a CUDA GPU: plain diffusers against stablekit's default plan and `--fast`.

    python benchmarks/gpu.py [--runs 1] [--steps 30] [--variants diffusers,stablekit-default,stablekit-fast]
                             [--work-dir DIR] [--save FILE] [--baseline FILE]

The model is SDXL's released architecture with random weights (benchmarks/memory.py's builder, stored in bf16
like the fp16 release; same memory and compute as the real one). Each variant runs in its own process that times
itself: `load` (imports, reading the folder, moving to the GPU), the `first` render (for --fast: the compile of
the UNet, once per size), then `steady`, the median of --renders more renders: what the tenth image of a batch or a
warm server costs. `end to end` is the process's wall time as the parent sees it. Plain diffusers is written the
way its documentation shows: bfloat16 (what stablekit plans on compute capability 8.0+), `.to("cuda")`, guidance
5.0; stablekit makes the library calls `stablekit image` makes. Variants alternate run by run.

Also timed, once: scaled_dot_product_attention at SDXL's two attention shapes for each backend this GPU has
(flash, memory-efficient, cuDNN), which is what --fast's backend order rests on.

Exit 1 when a variant fails, or when --baseline is given and a variant's steady render got slower by more than
--limit (10 %).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROMPT = "a lighthouse at dusk, oil painting"

PLAIN = r'''
import json, statistics, sys, time
t0 = time.perf_counter()
import torch
from diffusers import StableDiffusionXLPipeline
a = json.loads(sys.argv[1])
pipe = StableDiffusionXLPipeline.from_pretrained(a["folder"], dtype=torch.bfloat16, local_files_only=True)
pipe.to("cuda")
pipe.set_progress_bar_config(disable=True)
torch.cuda.synchronize()
t1 = time.perf_counter()
def render():
    start = time.perf_counter()
    image = pipe(a["prompt"], width=a["size"], height=a["size"], num_inference_steps=a["steps"], guidance_scale=5.0,
                 generator=torch.Generator("cpu").manual_seed(1)).images[0]
    torch.cuda.synchronize()
    return time.perf_counter() - start, image
first, image = render()
steady = [render()[0] for _ in range(a["renders"])]
image.save(a["out"])
print(json.dumps({"load": t1 - t0, "first": first, "steady": statistics.median(steady),
                  "peak_gib": torch.cuda.max_memory_allocated() / 1024**3}))
'''

STABLEKIT = r'''
import json, statistics, sys, time
t0 = time.perf_counter()
from stablekit import runner
from stablekit.console import Progress
from stablekit.jobs import job_from
from stablekit.sink import CaptureSink
a = json.loads(sys.argv[1])
job = job_from("image", {"prompt": a["prompt"], "model": a["folder"], "width": a["size"], "height": a["size"],
                         "num_inference_steps": a["steps"], "guidance_scale": 5.0, "seed": 1, "device": "cuda",
                         **a["flags"]})
plan = runner.plan_job(job)
session = runner.engine_for("image").load(plan, Progress())
import torch
torch.cuda.synchronize()
t1 = time.perf_counter()
def render():
    sink = CaptureSink()
    start = time.perf_counter()
    session.run(plan, sink, {})
    torch.cuda.synchronize()
    return time.perf_counter() - start, sink
first, sink = render()
steady = [render()[0] for _ in range(a["renders"])]
sink.values[0].save(a["out"])
print(json.dumps({"load": t1 - t0, "first": first, "steady": statistics.median(steady),
                  "peak_gib": torch.cuda.max_memory_allocated() / 1024**3, "dtype": plan.device_plan.dtype,
                  "offload": plan.device_plan.offload}))
'''

ATTENTION = r'''
import json, time, torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
out = {}
# SDXL at 1024^2 with guidance (batch 2): 4096 tokens x 10 heads and 1024 tokens x 20 heads, head size 64
for label, (tokens, heads) in {"4096x10": (4096, 10), "1024x20": (1024, 20)}.items():
    q, k, v = (torch.randn(2, heads, tokens, 64, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    for name in ("FLASH_ATTENTION", "EFFICIENT_ATTENTION", "CUDNN_ATTENTION"):
        try:
            with sdpa_kernel(getattr(SDPBackend, name)):
                for _ in range(5):
                    F.scaled_dot_product_attention(q, k, v)
                torch.cuda.synchronize()
                start = time.perf_counter()
                for _ in range(50):
                    F.scaled_dot_product_attention(q, k, v)
                torch.cuda.synchronize()
            out[f"{label} {name}"] = (time.perf_counter() - start) / 50 * 1e6
        except RuntimeError as err:
            out[f"{label} {name}"] = str(err).splitlines()[0][:80]
print(json.dumps(out))
'''

VARIANTS = {
    "diffusers": ("plain", {}),
    "stablekit-default": ("stablekit", {}),
    "stablekit-fast": ("stablekit", {"fast": True}),
}


def run(script: str, args: dict, env: dict, timeout: float) -> dict:
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", script, json.dumps(args)], capture_output=True, text=True,
                            env=env, timeout=timeout)
    wall = time.perf_counter() - start
    if result.returncode:
        return {"error": result.stderr.strip()[-2000:]}
    data = json.loads(result.stdout.strip().splitlines()[-1])
    data["end_to_end"] = wall
    return data


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1, help="processes per variant")
    parser.add_argument("--renders", type=int, default=2, help="steady renders timed after the first, per process")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--work-dir", default=os.path.join(tempfile.gettempdir(), "stablekit-memory"))
    parser.add_argument("--timeout", type=float, default=600, help="seconds per process")
    parser.add_argument("--save", help="write the figures as JSON")
    parser.add_argument("--baseline", help="JSON from an earlier --save: compare steady renders")
    parser.add_argument("--limit", type=float, default=0.10)
    args = parser.parse_args()
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "STABLEKIT_HOME": str(work / "home"), "HF_HUB_OFFLINE": "1"}
    os.environ.update(STABLEKIT_HOME=env["STABLEKIT_HOME"])
    sys.path.insert(0, str(HERE))
    import memory
    import torch

    if not torch.cuda.is_available():
        print("no CUDA device here: nothing measured")
        return 0
    folder = memory.build("sdxl", work)
    gpu = torch.cuda.get_device_name(0)
    print(f"python {' '.join(sys.argv)}\n{gpu}, torch {torch.__version__}; SDXL architecture (random weights) "
          f"{args.size}x{args.size}, {args.steps} steps, guidance 5.0", flush=True)
    results: dict = {"gpu": gpu, "torch": torch.__version__, "steps": args.steps, "size": args.size}
    results["attention_us"] = run(ATTENTION, {}, env, 120)
    for name, value in results["attention_us"].items():
        shown = f"{value:8.1f} us" if isinstance(value, float) else value
        print(f"  sdpa {name:<28}{shown}", flush=True)
    variants = args.variants.split(",")
    samples: dict[str, list[dict]] = {name: [] for name in variants}
    failed = []
    for index in range(args.runs):
        for name in variants if index % 2 == 0 else variants[::-1]:
            kind, flags = VARIANTS[name]
            payload = {"folder": str(folder), "prompt": PROMPT, "size": args.size, "steps": args.steps,
                       "renders": args.renders, "out": str(work / f"gpu-{name}.png"), "flags": flags}
            data = run(PLAIN if kind == "plain" else STABLEKIT, payload, env, args.timeout)
            if "error" in data:
                failed.append(name)
                print(f"  {name} failed:\n{data['error']}", flush=True)
                continue
            samples[name].append(data)
            if args.save:  # after each process, so a run cut short keeps what it measured
                Path(args.save).write_text(json.dumps({**results, "samples": samples}, indent=2))
            print(f"  {name}: load {data['load']:.1f} s, first {data['first']:.2f} s, steady {data['steady']:.2f} s, "
                  f"end to end {data['end_to_end']:.1f} s, peak {data['peak_gib']:.1f} GiB", flush=True)
    keys = ("load", "first", "steady", "end_to_end", "peak_gib")
    medians = {name: {key: statistics.median(s[key] for s in values) for key in keys}
               for name, values in samples.items() if values}
    base = medians.get("diffusers")
    print(f"\n{'variant':<20}{'load s':>8}{'first s':>9}{'steady s':>10}{'x':>6}{'it/s':>7}{'end to end s':>14}"
          f"{'peak GiB':>10}")
    for name, m in medians.items():
        speed = base["steady"] / m["steady"] if base else float("nan")
        print(f"{name:<20}{m['load']:>8.1f}{m['first']:>9.2f}{m['steady']:>10.2f}{speed:>6.2f}"
              f"{args.steps / m['steady']:>7.1f}{m['end_to_end']:>14.1f}{m['peak_gib']:>10.1f}")
    results["medians"], results["samples"] = medians, samples
    if args.save:
        Path(args.save).write_text(json.dumps(results, indent=2))
    slower = []
    if args.baseline:
        old = json.loads(Path(args.baseline).read_text()).get("medians", {})
        for name, m in medians.items():
            if name in old:
                change = m["steady"] / old[name]["steady"] - 1
                print(f"{name}: steady {m['steady']:.2f} s vs baseline {old[name]['steady']:.2f} s ({change:+.1%})")
                if change > args.limit:
                    slower.append(name)
    return 1 if failed or slower else 0


if __name__ == "__main__":
    sys.exit(main())
