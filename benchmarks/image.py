"""`stablekit image` against a plain diffusers script doing the same work, as whole processes, in one run.

    python benchmarks/image.py [--runs 3] [--models tiny,sd-turbo-arch] [--baseline FILE] [--save FILE]

Both sides load the same model folder from disk, render the same prompt at the same size, steps and seed on
the CPU in float32, and save a PNG; a third column runs diffusers' own `diffusers-cli run` (diffusers >= 0.42)
on the same folder and settings when it is installed ("-" otherwise). `tiny` is stablekit's tiny-sd;
`sd-turbo-arch` is the full-size SD-Turbo
architecture (UNet 866M, VAE 84M, OpenCLIP-H text encoder 340M parameters) with random weights at 512x512,
1 step, built once into --work-dir (5.2 GB). Prints the median wall time of each side and stablekit's
overhead; exit 1 when the overhead exceeds --limit (5 % by default).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PLAIN = r"""
import sys, torch
from diffusers import StableDiffusionPipeline
folder, prompt, size, steps, seed, out = sys.argv[1:7]
pipe = StableDiffusionPipeline.from_pretrained(folder, dtype=torch.float32, safety_checker=None,
                                               requires_safety_checker=False, local_files_only=True)
pipe.set_progress_bar_config(disable=True)
generator = torch.Generator("cpu").manual_seed(int(seed))
image = pipe(prompt, width=int(size), height=int(size), num_inference_steps=int(steps), guidance_scale=0.0,
             generator=generator).images[0]
image.save(out)
"""


def build_sd_turbo_architecture(folder: Path, tiny_sd: Path) -> Path:
    """SD-Turbo's layout and sizes with random weights (the tokenizer files come from tiny-sd)."""
    if (folder / "model_index.json").is_file():
        return folder
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(0)
    unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=1024, attention_head_dim=(5, 10, 20, 20),
                                use_linear_projection=True, block_out_channels=(320, 640, 1280, 1280))
    vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), latent_channels=4, sample_size=512,
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                        layers_per_block=2)
    text_encoder = CLIPTextModel(CLIPTextConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=23,
                                                num_attention_heads=16, projection_dim=512, hidden_act="gelu",
                                                vocab_size=49408, max_position_embeddings=77))
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       timestep_spacing="trailing", prediction_type="epsilon")
    tokenizer = CLIPTokenizer.from_pretrained(tiny_sd / "tokenizer")
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    pipe.save_pretrained(partial, safe_serialization=True)
    shutil.rmtree(partial / "tokenizer")
    shutil.copytree(tiny_sd / "tokenizer", partial / "tokenizer")
    partial.rename(folder)
    return folder


def timed(argv: list[str], env: dict) -> float:
    start = time.perf_counter()
    result = subprocess.run(argv, capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"failed: {' '.join(argv)}\n{result.stderr}")
    return elapsed


def compare(name: str, folder: Path, size: int, steps: int, runs: int, env: dict, out: Path) -> dict:
    prompt, seed = "a lighthouse at dusk", "1"
    plain = [sys.executable, "-c", PLAIN, str(folder), prompt, str(size), str(steps), seed, str(out / "plain.png")]
    ours = [sys.executable, "-m", "stablekit", "image", prompt, "--model", str(folder), "--width", str(size),
            "--height", str(size), "--steps", str(steps), "--guidance", "0", "--seed", seed, "--device", "cpu",
            "-q", "--overwrite", "-o", str(out / "stablekit.png")]
    sides = [("diffusers", plain), ("stablekit", ours)]
    cli = shutil.which("diffusers-cli")
    if cli:
        kwargs = {"prompt": prompt, "width": size, "height": size, "num_inference_steps": steps, "guidance_scale": 0.0}
        sides.append(("diffusers-cli", [cli, "run", "--model", str(folder), "--device-map", "cpu", "--dtype",
                                        "float32", "--seed", seed, "--pipeline-kwargs", json.dumps(kwargs),
                                        "-o", str(out / "diffusers-cli.png")]))
    for _, argv in sides:
        timed(argv, env)  # warm the file cache
    samples: dict[str, list[float]] = {side: [] for side, _ in sides}
    for run in range(runs):  # alternate, so a busy moment on the machine hits every side alike
        for side, argv in sides[:: 1 if run % 2 == 0 else -1]:
            samples[side].append(timed(argv, env))
    medians = {side: statistics.median(values) for side, values in samples.items()}
    medians["overhead"] = medians["stablekit"] / medians["diffusers"] - 1
    cli_column = f"{medians['diffusers-cli']:>14.2f}" if "diffusers-cli" in medians else f"{'-':>14}"
    print(f"{name:<16}{size:>5}{steps:>6}{medians['diffusers']:>12.2f}{medians['stablekit']:>12.2f}"
          f"{medians['overhead'] * 100:>+10.1f}%{cli_column}", flush=True)
    return medians


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--models", default="tiny,sd-turbo-arch")
    parser.add_argument("--work-dir", default=os.path.join(tempfile.gettempdir(), "stablekit-bench"))
    parser.add_argument("--limit", type=float, default=0.05, help="largest acceptable overhead (fraction)")
    parser.add_argument("--baseline", help="JSON from an earlier --save")
    parser.add_argument("--save", help="write this run's figures as JSON")
    args = parser.parse_args()
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "STABLEKIT_HOME": str(work / "home"), "HF_HUB_OFFLINE": "1"}
    os.environ.update(STABLEKIT_HOME=env["STABLEKIT_HOME"])
    from stablekit import hub
    from stablekit.registry import load_registry

    tiny_sd = hub.ensure_local(load_registry().get("tiny-sd"))
    cases = {"tiny": (tiny_sd, 64, 2), "sd-turbo-arch": (None, 512, 1)}
    print(f"{'model':<16}{'size':>5}{'steps':>6}{'diffusers s':>12}{'stablekit s':>12}{'overhead':>11}"
          f"{'diffusers-cli s':>16}")
    results = {}
    for name in args.models.split(","):
        folder, size, steps = cases[name]
        if folder is None:
            folder = build_sd_turbo_architecture(work / "sd-turbo-arch", tiny_sd)
        results[name] = compare(name, folder, size, steps, args.runs, env, work)
    if args.baseline:
        baseline = json.loads(Path(args.baseline).read_text())
        for name, figures in results.items():
            if name in baseline:
                change = figures["stablekit"] / baseline[name]["stablekit"] - 1
                print(f"{name}: stablekit {figures['stablekit']:.2f} s vs baseline "
                      f"{baseline[name]['stablekit']:.2f} s ({change * 100:+.1f}%)")
    if args.save:
        Path(args.save).write_text(json.dumps(results, indent=2))
    over = [name for name, figures in results.items() if figures["overhead"] > args.limit]
    if over:
        print(f"overhead above {args.limit:.0%}: {', '.join(over)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
