"""CPU fast paths against plain diffusers / transformers, one process per variant, in alternating order.

    python benchmarks/cpu.py [--runs 3] [--parts sd-turbo,sdxl-turbo,text,components] [--variants a,b,...]
                             [--work-dir DIR] [--save FILE] [--load-only]

Images: SD-Turbo's architecture (UNet 866M, OpenCLIP-H text encoder, VAE 84M; random weights, built once into
--work-dir by benchmarks/image.py's builder) at 512x512, 1 step, guidance 0; SDXL-Turbo's at 512x512, 1 step, only
when the machine has the RAM for it in float32 (else skipped with the reason). The tiny decoder is a random-weight
AutoencoderTiny in the real TAESD architecture, put in the benchmark's own hub cache as madebyollin/taesd and
madebyollin/taesdxl (the machine has no network): its speed is TAESD's, its pictures are noise, like the rest.

Each variant runs in a fresh process that times itself: `render` is the pipeline call (text encoding, denoising,
decoding), `in-process` is imports + loading + render (everything but interpreter start), `end to end` is the
process's wall time as the parent sees it. The stablekit variants make the library calls `stablekit image` makes
(job_from -> plan -> engine load -> session run, the sink writing the PNG and its sidecar) and end as it ends
(exit handlers, then no interpreter teardown: ~2.5 s of a plain script's exit on a small CPU); a served variant
is the `stablekit image` command itself against a warm `stablekit serve` started beforehand (its start printed
apart): its end to end is the command's wall time, its render and in-process the job's time in the server (which
has the model loaded: the server's log says it). Order alternates run by run so a busy moment hits all variants
alike; medians are printed with each variant's ratio to plain diffusers float32 (>1 = faster). Each stablekit
variant runs once first, printed apart: that run fills what later runs reuse (a --compile variant's compiled code;
the weights kept converted to the run dtype, stablekit.weights_cache); the `-no-cache` variants turn the latter off
(STABLEKIT_WEIGHTS_CACHE=off) to show what it saves. The `stablekit-catalog` variants run `--model sd-turbo` as a
user does: its record loads the repository's float16 files (the benchmark puts the same random weights in its hub
cache as stabilityai/sd-turbo, float32 files with float16 copies beside, as the real repository has them), which
every load converts to the run dtype unless a converted copy is kept. The machine's load average and free memory
are printed before and after.

Components (`--parts components`, one process): the text encoder, one UNet step, the VAE's decode and TAESD's decode
at 512x512, each in float32 and bfloat16, and the UNet step in channels_last: where the time of a render goes.

Text: StableLM-2-1.6B's architecture (random weights, benchmarks/text.py's builder), greedy, prompt of 14 tokens,
--tokens new tokens: tokens/s of float32, bfloat16 and `--quantize int8` (float32 with torch.ao's dynamic int8
quantisation of the linear layers, per-channel weights), each in its own process, and whether bf16/int8 chose the
same tokens as float32.
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
from contextlib import contextmanager
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROMPT = "a lighthouse at dusk, oil painting"
SEED = 1
GIB = 1024**3
TAESD_REPO = "madebyollin/taesd"
TAESDXL_REPO = "madebyollin/taesdxl"
_FAKE_COMMIT = "0" * 40
LOAD_ONLY = False  # --load-only: imports and loading (a bf16 render takes minutes on a CPU without bf16 hardware)

# One process: plain diffusers, the way a user would write it, timing itself.
PLAIN = r'''
import json, sys, time
t0 = time.perf_counter()
import torch
from diffusers import AutoPipelineForText2Image
a = json.loads(sys.argv[1])
pipe = AutoPipelineForText2Image.from_pretrained(a["folder"], dtype=getattr(torch, a["dtype"]),
                                                 local_files_only=True)
if a.get("channels_last"):
    pipe.unet.to(memory_format=torch.channels_last)
pipe.set_progress_bar_config(disable=True)
t1 = time.perf_counter()
if a.get("load_only"):
    print(json.dumps({"load": t1 - t0, "render": 0.0, "in_process": t1 - t0}))
    sys.exit(0)
image = pipe(a["prompt"], width=a["size"], height=a["size"], num_inference_steps=a["steps"], guidance_scale=0.0,
             generator=torch.Generator("cpu").manual_seed(a["seed"])).images[0]
t2 = time.perf_counter()
image.save(a["out"])
print(json.dumps({"load": t1 - t0, "render": t2 - t1, "in_process": time.perf_counter() - t0}))
'''

# One process: stablekit's library path for `stablekit image` (what the CLI calls after parsing its flags).
STABLEKIT = r'''
import json, sys, time
t0 = time.perf_counter()
from stablekit import runner
from stablekit.console import Progress
from stablekit.jobs import job_from
from stablekit.sink import Sink
a = json.loads(sys.argv[1])
job = job_from("image", {"prompt": a["prompt"], "model": a["folder"], "width": a["size"], "height": a["size"],
                         "num_inference_steps": a["steps"], "guidance_scale": 0.0, "seed": a["seed"],
                         "device": "cpu", "output": a["out"], **a["flags"]})
plan = runner.plan_job(job)
session = runner.engine_for("image").load(plan, Progress())
t1 = time.perf_counter()
if a.get("load_only"):
    print(json.dumps({"load": t1 - t0, "render": 0.0, "in_process": t1 - t0, "dtype": plan.device_plan.dtype}))
    from stablekit.cli import _exit_without_teardown
    _exit_without_teardown(0)
sink = Sink(".", overwrite=True, total=1)
session.run(plan, sink)
t2 = time.perf_counter()
print(json.dumps({"load": t1 - t0, "render": t2 - t1, "in_process": time.perf_counter() - t0,
                  "dtype": plan.device_plan.dtype}))
from stablekit.cli import _exit_without_teardown
_exit_without_teardown(0)  # as the command ends: exit handlers run, no interpreter teardown of torch & co
'''

TEXT = r'''
import json, sys, time
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
a = json.loads(sys.argv[1])
tok = AutoTokenizer.from_pretrained(a["folder"], local_files_only=True)
model = AutoModelForCausalLM.from_pretrained(a["folder"], local_files_only=True,
                                             dtype=torch.bfloat16 if a["variant"] == "bf16" else torch.float32).eval()
if a["variant"] == "int8":  # what `stablekit text --quantize int8` does
    from stablekit.engines.text import quantize_int8
    model = quantize_int8(model)
ids = tok("The quick brown fox jumps over the lazy dog. Once upon a time", return_tensors="pt")
with torch.inference_mode():
    model.generate(**ids, max_new_tokens=2, do_sample=False)  # warm-up
    start = time.perf_counter()
    out = model.generate(**ids, max_new_tokens=a["tokens"], min_new_tokens=a["tokens"], do_sample=False,
                         pad_token_id=tok.eos_token_id)
    seconds = time.perf_counter() - start
new = out[0, ids["input_ids"].shape[1]:].tolist()
print(json.dumps({"tokens_per_second": len(new) / seconds, "tokens": new}))
'''

# One process: where a 512x512 1-step render's time goes, stage by stage, in float32 and bfloat16.
COMPONENTS = r'''
import json, statistics, sys, time
import torch
from diffusers import AutoencoderKL, AutoencoderTiny, UNet2DConditionModel
from transformers import CLIPTextModel
a = json.loads(sys.argv[1])
torch.manual_seed(0)
unet = UNet2DConditionModel.from_pretrained(a["folder"], subfolder="unet").eval()
vae = AutoencoderKL.from_pretrained(a["folder"], subfolder="vae").eval()
text = CLIPTextModel.from_pretrained(a["folder"], subfolder="text_encoder").eval()
tiny = AutoencoderTiny.from_pretrained(a["taesd"]).eval()
latents, t = torch.randn(1, 4, 64, 64), torch.tensor([999])
ids = torch.randint(0, 49407, (1, 77))
def timed(fn, repeat):
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        s = time.perf_counter(); fn(); times.append(time.perf_counter() - s)
    return statistics.median(times)
out = {}
with torch.inference_mode():
    for dtype in (torch.float32, torch.bfloat16):
        name = str(dtype).split(".")[1]
        for m in (unet, vae, text, tiny):
            m.to(dtype)
        hidden = text(ids)[0]
        out[f"text encoder {name}"] = timed(lambda: text(ids), a["repeat"])
        out[f"unet step {name}"] = timed(lambda: unet(latents.to(dtype), t, hidden), a["repeat"])
        out[f"vae decode {name}"] = timed(lambda: vae.decode(latents.to(dtype)), a["repeat"])
        out[f"taesd decode {name}"] = timed(lambda: tiny.decode(latents.to(dtype)), a["repeat"])
    for m in (unet, text):
        m.to(torch.float32)
    hidden = text(ids)[0]
    unet.to(memory_format=torch.channels_last)
    out["unet step float32 channels_last"] = timed(lambda: unet(latents, t, hidden), a["repeat"])
print(json.dumps(out))
'''

IMAGE_VARIANTS = {
    "diffusers-fp32": ("plain", {"dtype": "float32"}),
    "diffusers-bf16": ("plain", {"dtype": "bfloat16"}),
    "diffusers-fp32-channels-last": ("plain", {"dtype": "float32", "channels_last": True}),
    "stablekit-default": ("stablekit", {}),
    "stablekit-bf16": ("stablekit", {"dtype": "bfloat16"}),
    "stablekit-tiny-decoder": ("stablekit", {"decoder": "tiny"}),
    "stablekit-bf16-tiny-decoder": ("stablekit", {"dtype": "bfloat16", "decoder": "tiny"}),
    "stablekit-compile": ("stablekit", {"compile": True}),
    "stablekit-compile-tiny-decoder": ("stablekit", {"compile": True, "decoder": "tiny"}),
    # `stablekit image` as a command against a warm `stablekit serve` (started once, before the runs).
    "stablekit-served-tiny-decoder": ("served", {"decoder": "tiny"}),
    # `--model sd-turbo` as a user runs it: the catalog record loads the repository's float16 files (here the same
    # random weights, placed in the benchmark's hub cache as stabilityai/sd-turbo), converted to the run dtype.
    "stablekit-catalog": ("stablekit", {"model": "sd-turbo"}),
    "stablekit-catalog-no-cache": ("stablekit", {"model": "sd-turbo"}, {"STABLEKIT_WEIGHTS_CACHE": "off"}),
    # The converted-weights cache off: every load converts, as before it existed.
    "stablekit-default-no-cache": ("stablekit", {}, {"STABLEKIT_WEIGHTS_CACHE": "off"}),
    "stablekit-bf16-no-cache": ("stablekit", {"dtype": "bfloat16"}, {"STABLEKIT_WEIGHTS_CACHE": "off"}),
}
DEFAULT_VARIANTS = ("diffusers-fp32,diffusers-bf16,stablekit-default,stablekit-bf16,stablekit-tiny-decoder,"
                    "stablekit-bf16-tiny-decoder,stablekit-compile,stablekit-compile-tiny-decoder")


def machine_state() -> str:
    load = os.getloadavg()
    free = _available_gib()
    return (f"load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} on {os.cpu_count()} CPUs, "
            f"{free:.1f} GiB RAM available")


def _available_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024 / GIB
    return float("nan")


def fake_taesd(env: dict) -> None:
    """Random-weight AutoencoderTiny models in TAESD's real architecture (TAESDXL's is the same), placed where the
    hub cache would hold madebyollin/taesd and madebyollin/taesdxl (this machine cannot download the real ones; the
    speed is the same)."""
    for repo in (TAESD_REPO, TAESDXL_REPO):
        cache = Path(env["HF_HOME"]) / "hub" / ("models--" + repo.replace("/", "--"))
        snapshot = cache / "snapshots" / _FAKE_COMMIT
        if (snapshot / "config.json").is_file():
            continue
        import torch
        from diffusers import AutoencoderTiny

        torch.manual_seed(0)
        (cache / "refs").mkdir(parents=True, exist_ok=True)
        (cache / "blobs").mkdir(exist_ok=True)
        AutoencoderTiny().save_pretrained(snapshot, safe_serialization=True)  # the defaults are TAESD's layout
        (cache / "refs" / "main").write_text(_FAKE_COMMIT)


def fake_sd_turbo_repo(env: dict, folder: Path) -> None:
    """The SD-Turbo architecture folder as the hub cache would hold stabilityai/sd-turbo: its float32 files (linked)
    and float16 variant files beside them, as the real repository has both."""
    snapshot = Path(env["HF_HOME"]) / "hub" / "models--stabilityai--sd-turbo" / "snapshots" / _FAKE_COMMIT
    if (snapshot / "model_index.json").is_file():
        return
    from safetensors.torch import load_file, save_file

    partial = snapshot.with_name(_FAKE_COMMIT + ".partial")
    for source in sorted(folder.rglob("*")):
        if source.is_dir():
            continue
        target = partial / source.relative_to(folder)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(source)
        if source.suffix == ".safetensors":
            half = {name: t.half() if t.is_floating_point() else t for name, t in load_file(source).items()}
            save_file(half, target.with_name(source.name.replace(".safetensors", ".fp16.safetensors")))
    partial.rename(snapshot)
    (snapshot.parent.parent / "blobs").mkdir(exist_ok=True)
    refs = snapshot.parent.parent / "refs"
    refs.mkdir(exist_ok=True)
    (refs / "main").write_text(_FAKE_COMMIT)


def run_variant(name: str, folder: Path, size: int, steps: int, env: dict, out: Path) -> dict:
    kind, options, *extra_env = IMAGE_VARIANTS[name]
    env = {**env, **(extra_env[0] if extra_env else {})}
    args = {"folder": str(folder), "prompt": PROMPT, "size": size, "steps": steps, "seed": SEED,
            "out": str(out / f"{name}.png"), "load_only": LOAD_ONLY}
    if kind == "served":
        if LOAD_ONLY:
            raise SystemExit(f"{name}: a served call cannot be timed without its render (drop --load-only)")
        return run_served(folder, size, steps, options, env, out / f"{name}.png")
    if kind == "plain":
        args.update(options)
        script = PLAIN
    else:
        args["flags"] = options
        script = STABLEKIT
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", script, json.dumps(args)], capture_output=True, text=True,
                            env=env, cwd=out)
    wall = time.perf_counter() - start
    if result.returncode:
        raise SystemExit(f"{name} failed:\n{result.stderr[-3000:]}")
    data = json.loads(result.stdout.strip().splitlines()[-1])
    data["end_to_end"] = wall
    return data


def run_served(folder: Path, size: int, steps: int, options: dict, env: dict, out: Path) -> dict:
    argv = [sys.executable, "-m", "stablekit", "image", PROMPT, "--model", str(folder), "--width", str(size),
            "--height", str(size), "--steps", str(steps), "--guidance", "0", "--seed", str(SEED), "--device", "cpu",
            "-q", "--overwrite", "-o", str(out)]
    for key, value in options.items():
        argv += [f"--{key}", str(value)]
    before = _served_jobs()
    start = time.perf_counter()
    result = subprocess.run(argv, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    if result.returncode:
        raise SystemExit(f"served call failed:\n{result.stderr[-3000:]}")
    jobs = _served_jobs()
    if len(jobs) != len(before) + 1:
        raise SystemExit(f"expected one more job in the server's log, found {len(jobs) - len(before)}")
    # The job's time inside the server (the model already loaded there): what the call waited for in-process.
    return {"load": 0.0, "render": jobs[-1], "in_process": jobs[-1], "end_to_end": wall}


SERVER_LOG: Path | None = None


def _served_jobs() -> list[float]:
    text = SERVER_LOG.read_text() if SERVER_LOG and SERVER_LOG.is_file() else ""
    return [float(seconds) for seconds in re.findall(r"job \d+: done in ([\d.]+) s", text)]


@contextmanager
def server_for(variants: list[str], env: dict, work: Path):
    """A warm `stablekit serve` while served variants run (its start-up printed, not counted)."""
    if not any(IMAGE_VARIANTS[name][0] == "served" for name in variants):
        yield
        return
    from serve import start_server

    global SERVER_LOG
    SERVER_LOG = work / "server-cpu.log"
    process, start_up = start_server(env, SERVER_LOG)
    print(f"  stablekit serve started in {start_up:.1f} s (not counted)", flush=True)
    try:
        yield
    finally:
        process.terminate()
        process.wait(120)


def check_image(path: Path) -> str:
    import numpy as np
    from PIL import Image

    pixels = np.asarray(Image.open(path), dtype=np.float32)
    if not np.isfinite(pixels).all() or pixels.max() <= 0:
        return "BLACK/NaN"
    return "ok"


def image_part(label: str, folder: Path, size: int, steps: int, variants: list[str], runs: int, env: dict,
               out: Path) -> dict:
    print(f"\n{label} {size}x{size}, {steps} step(s), {runs} run(s) per variant; {machine_state()}", flush=True)
    samples: dict[str, list[dict]] = {name: [] for name in variants}
    cold = {}
    # A stablekit variant's first run fills its caches (compiled code; the weights kept converted to its dtype),
    # so it is run once first and printed apart: the table is what every later one-shot run takes.
    with server_for(variants, env, out.parent):
        for name in (v for v in variants if IMAGE_VARIANTS[v][0] in ("stablekit", "served")):
            cold[name] = run_variant(name, folder, size, steps, env, out)
            print(f"  {name}, first run (fills its caches, not counted): load {cold[name]['load']:.1f} s, "
                  f"end to end {cold[name]['end_to_end']:.1f} s", flush=True)
        for run in range(runs):
            order = variants if run % 2 == 0 else variants[::-1]
            for name in order:
                samples[name].append(run_variant(name, folder, size, steps, env, out))
                last = samples[name][-1]
                print(f"  run {run + 1} {name}: render {last['render']:.2f} s, end to end "
                      f"{last['end_to_end']:.2f} s", file=sys.stderr, flush=True)
    medians = {name: {key: statistics.median(s[key] for s in values)
                      for key in ("load", "render", "in_process", "end_to_end")} for name, values in samples.items()}
    base = medians.get("diffusers-fp32")
    print(f"{'variant':<32}{'imports+load s':>15}{'render s':>10}{'x':>7}{'in-process s':>14}{'x':>7}"
          f"{'end to end s':>14}{'x':>7}  image")
    for name, m in medians.items():
        ratios = [base[k] / m[k] if base and m[k] else float("nan") for k in ("render", "in_process", "end_to_end")]
        made = "-" if LOAD_ONLY else check_image(out / f"{name}.png")
        print(f"{name:<32}{m['load']:>15.2f}{m['render']:>10.2f}{ratios[0]:>7.2f}{m['in_process']:>14.2f}"
              f"{ratios[1]:>7.2f}{m['end_to_end']:>14.2f}{ratios[2]:>7.2f}  {made}")
    print(f"after: {machine_state()}", flush=True)
    return {"medians": medians, "samples": samples, "first_runs": cold, "load_only": LOAD_ONLY}


def components_part(folder: Path, env: dict, repeat: int) -> dict:
    taesd = next((Path(env["HF_HOME"]) / "hub" / ("models--" + TAESD_REPO.replace("/", "--")) / "snapshots").iterdir())
    print(f"\nSD-Turbo architecture, stage by stage at 512x512 (median of {repeat} after a warm-up); "
          f"{machine_state()}", flush=True)
    args = {"folder": str(folder), "taesd": str(taesd), "repeat": repeat}
    result = subprocess.run([sys.executable, "-c", COMPONENTS, json.dumps(args)], capture_output=True, text=True,
                            env=env)
    if result.returncode:
        raise SystemExit(f"components failed:\n{result.stderr[-3000:]}")
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    for name, seconds in figures.items():
        print(f"  {name:<36}{seconds:>8.2f} s")
    print(f"after: {machine_state()}", flush=True)
    return figures


def text_part(folder: Path, tokens: int, runs: int) -> dict:
    variants = ["fp32", "bf16", "int8"]
    print(f"\nStableLM-2-1.6B architecture, greedy, {tokens} new tokens, {runs} run(s); {machine_state()}",
          flush=True)
    samples: dict[str, list[dict]] = {v: [] for v in variants}
    for run in range(runs):
        for variant in (variants if run % 2 == 0 else variants[::-1]):
            args = {"folder": str(folder), "variant": variant, "tokens": tokens}
            result = subprocess.run([sys.executable, "-c", TEXT, json.dumps(args)], capture_output=True, text=True)
            if result.returncode:
                raise SystemExit(f"text {variant} failed:\n{result.stderr[-3000:]}")
            samples[variant].append(json.loads(result.stdout.strip().splitlines()[-1]))
            print(f"  run {run + 1} {variant}: {samples[variant][-1]['tokens_per_second']:.2f} tokens/s",
                  file=sys.stderr, flush=True)
    reference = samples["fp32"][0]["tokens"]
    print(f"{'variant':<10}{'tokens/s':>10}{'x fp32':>8}  same tokens as fp32")
    base = statistics.median(s["tokens_per_second"] for s in samples["fp32"])
    result = {}
    for variant, values in samples.items():
        rate = statistics.median(s["tokens_per_second"] for s in values)
        same = sum(a == b for a, b in zip(values[0]["tokens"], reference, strict=False))
        print(f"{variant:<10}{rate:>10.2f}{rate / base:>8.2f}  {same}/{len(reference)}")
        result[variant] = {"tokens_per_second": rate, "same_tokens": same}
    print(f"after: {machine_state()}", flush=True)
    return result


def build_sdxl_turbo_architecture(folder: Path, tiny_sdxl: Path) -> Path:
    """SDXL-Turbo's layout and sizes with random weights (tokenizers from tiny-sdxl); about 7 GB in bf16 on disk."""
    if (folder / "model_index.json").is_file():
        return folder
    import shutil

    import torch
    from diffusers import (
        AutoencoderKL,
        EulerAncestralDiscreteScheduler,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=64, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20), cross_attention_dim=2048,
        use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=256,
        projection_class_embeddings_input_dim=2816).to(torch.bfloat16)
    vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), latent_channels=4, sample_size=1024,
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                        layers_per_block=2, scaling_factor=0.13025, force_upcast=True)
    te1 = CLIPTextModel(CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                       num_attention_heads=12, hidden_act="quick_gelu", vocab_size=49408))
    te2 = CLIPTextModelWithProjection(CLIPTextConfig(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32,
                                                     num_attention_heads=20, projection_dim=1280, hidden_act="gelu",
                                                     vocab_size=49408)).to(torch.bfloat16)
    scheduler = EulerAncestralDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                                timestep_spacing="trailing")
    tok = CLIPTokenizer.from_pretrained(tiny_sdxl / "tokenizer")
    pipe = StableDiffusionXLPipeline(vae=vae, text_encoder=te1, text_encoder_2=te2, tokenizer=tok, tokenizer_2=tok,
                                     unet=unet, scheduler=scheduler)
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    pipe.save_pretrained(partial, safe_serialization=True)
    for name in ("tokenizer", "tokenizer_2"):
        shutil.rmtree(partial / name)
        shutil.copytree(tiny_sdxl / "tokenizer", partial / name)
    partial.rename(folder)
    return folder


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--parts", default="sd-turbo,sdxl-turbo,text")
    parser.add_argument("--variants", default=DEFAULT_VARIANTS, help=f"of: {', '.join(IMAGE_VARIANTS)}")
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=2, help="timed calls per stage in --parts components")
    parser.add_argument("--sdxl-min-ram", type=float, default=22.0,
                        help="GiB of available RAM needed to run SDXL-Turbo's architecture in float32")
    parser.add_argument("--work-dir", default=os.path.join(tempfile.gettempdir(), "stablekit-bench"))
    parser.add_argument("--save", help="write the figures as JSON")
    parser.add_argument("--load-only", action="store_true",
                        help="time imports and loading only (no render; not for served variants)")
    args = parser.parse_args()
    global LOAD_ONLY
    LOAD_ONLY = args.load_only
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    out = work / "out"
    out.mkdir(exist_ok=True)
    env = {**os.environ, "STABLEKIT_HOME": str(work / "home"), "HF_HOME": str(work / "hf-home"),
           "HF_HUB_OFFLINE": "1"}
    os.environ.update(STABLEKIT_HOME=env["STABLEKIT_HOME"], HF_HOME=env["HF_HOME"])
    sys.path.insert(0, str(HERE))
    from image import build_sd_turbo_architecture

    from stablekit import hub
    from stablekit.registry import load_registry

    threads = os.environ.get("OMP_NUM_THREADS", "torch's default")
    print(f"python {' '.join(sys.argv)}\n{machine_state()}; threads: {threads}")
    variants = args.variants.split(",")
    unknown = set(variants) - set(IMAGE_VARIANTS)
    if unknown:
        raise SystemExit(f"unknown variants: {', '.join(sorted(unknown))}")
    results: dict = {"machine": machine_state()}
    parts = args.parts.split(",")
    if any(v.endswith("tiny-decoder") for v in variants):
        fake_taesd(env)
    if "sd-turbo" in parts:
        tiny_sd = hub.ensure_local(load_registry().get("tiny-sd"))
        folder = build_sd_turbo_architecture(work / "sd-turbo-arch", tiny_sd)
        if any(IMAGE_VARIANTS[v][1].get("model") == "sd-turbo" for v in variants):
            fake_sd_turbo_repo(env, folder)
        results["sd-turbo"] = image_part("SD-Turbo architecture", folder, 512, 1, variants, args.runs, env, out)
    if "components" in parts:
        fake_taesd(env)
        tiny_sd = hub.ensure_local(load_registry().get("tiny-sd"))
        folder = build_sd_turbo_architecture(work / "sd-turbo-arch", tiny_sd)
        results["components"] = components_part(folder, env, args.repeat)
    if "sdxl-turbo" in parts:
        free = _available_gib()
        if free < args.sdxl_min_ram:
            print(f"\nSDXL-Turbo architecture: skipped: {free:.1f} GiB of RAM available, {args.sdxl_min_ram:g} GiB "
                  "needed (3.5 B parameters are 13 GiB in float32, plus activations and the other processes)")
            results["sdxl-turbo"] = {"skipped": f"{free:.1f} GiB available"}
        else:
            tiny_sdxl = hub.ensure_local(load_registry().get("tiny-sdxl"))
            folder = build_sdxl_turbo_architecture(work / "sdxl-turbo-arch", tiny_sdxl)
            results["sdxl-turbo"] = image_part("SDXL-Turbo architecture", folder, 512, 1, variants, args.runs, env,
                                               out)
    if "text" in parts:
        sys.path.insert(0, str(HERE))
        from text import build_1_6b

        folder = build_1_6b(work / "stablelm-1.6b-arch")
        results["text"] = text_part(folder, args.tokens, args.runs)
    if args.save:
        Path(args.save).write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
