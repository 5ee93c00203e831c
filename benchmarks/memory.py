"""The device planner's memory estimates against the true peak of real-size architectures, one fresh process each.

    python benchmarks/memory.py [--points sd-turbo-512,lm-1.6b-128] [--work-dir DIR] [--results FILE]
                                [--reprint] [--cuda] [--margin-gib 3]

Each point builds (once, into --work-dir) a model folder with the released model's architecture and random
weights, stored in 16 bit like the released fp16/bf16 files, then runs stablekit's own engine path on it in a
fresh process: plan -> load -> place -> one generation (1 denoising step, 8 new tokens, one forward pass).
The child reads its peak resident memory (VmHWM) after loading, resets it (/proc/self/clear_refs) and reads
it again after generating, so load and generation peaks are measured apart; the whole process's peak is the
larger. Predicted is the planner's estimate (stablekit.memory_plan.estimate) for the same spec, workload,
dtype and strategy, recomputed from the measured results at every print (so a refit needs no rerun:
--reprint). Rows print in order of |log ratio|, the worst last; exit 1 when a ratio leaves 0.8-1.25.

RAM is shared: a point is skipped, with the reason printed, when the machine's available memory is less than
the predicted peak plus --margin-gib; one measurement runs at a time. CPU points compute in float32 (this
CPU has no bf16 instructions: half-precision matmuls run 10-20x slower); bf16 points load only.

--cuda measures torch.cuda.max_memory_allocated per model x strategy (none, VAE slicing/tiling, model, group,
sequential offload) where CUDA exists, printing the same table against the plan for a CUDA device.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

GIB = 1024**3
HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Point:
    name: str
    arch: str
    command: str
    values: dict
    dtype: str = "float32"
    strategy: dict = field(default_factory=dict)  # DevicePlan fields forced (vae_slicing, decode_chunk_size...)
    load_only: bool = False


def _image(size, **more):
    return {"prompt": "a lighthouse at dusk", "width": size, "height": size, "num_inference_steps": 1,
            "guidance_scale": 0.0, "seed": 1, **more}


LONG_TEXT = "The quick brown fox jumps over the lazy dog. " * 40
POINTS = [
    Point("sd-turbo-256", "sd-turbo", "image", _image(256)),
    Point("sd-turbo-512", "sd-turbo", "image", _image(512)),
    Point("sd-turbo-bf16-load", "sd-turbo", "image", _image(512), dtype="bfloat16", load_only=True),
    Point("sd15-512-cfg", "sd15", "image", _image(512, guidance_scale=7.5)),
    Point("sd-turbo-512-b2", "sd-turbo", "image", _image(512, num_images=2, batch_size=2)),
    Point("sd-turbo-512-b2-slicing", "sd-turbo", "image", _image(512, num_images=2, batch_size=2),
          strategy={"vae_slicing": True}),
    Point("lm-1.6b-128", "stablelm-1.6b", "text", {"prompt": LONG_TEXT[:400], "max_new_tokens": 8, "seed": 1,
                                                     "temperature": 0.0}),
    Point("lm-1.6b-1k", "stablelm-1.6b", "text", {"prompt": LONG_TEXT * 2, "max_new_tokens": 8, "seed": 1,
                                                   "temperature": 0.0}),
    Point("svd-2f-256x448", "svd", "video", {"width": 448, "height": 256, "num_frames": 2,
                                             "num_inference_steps": 1, "decode_chunk_size": 2, "seed": 1}),
    Point("svd-4f-256x448", "svd", "video", {"width": 448, "height": 256, "num_frames": 4,
                                             "num_inference_steps": 1, "decode_chunk_size": 4, "seed": 1}),
    Point("svd-4f-chunk1", "svd", "video", {"width": 448, "height": 256, "num_frames": 4,
                                            "num_inference_steps": 1, "decode_chunk_size": 1, "seed": 1},
          strategy={"decode_chunk_size": 1, "forward_chunking": True}),
    Point("triposr", "triposr", "mesh", {"mc_resolution": 128, "remove_background": False, "seed": 1}),
    Point("audio-10s", "stable-audio", "audio", {"prompt": "rain", "audio_end_in_s": 10.0,
                                                 "num_inference_steps": 1, "guidance_scale": 1.0, "seed": 1}),
    Point("sd-turbo-768-tiling", "sd-turbo", "image", _image(768), strategy={"vae_tiling": True}),
    Point("sdxl-bf16-load", "sdxl", "image", _image(1024), dtype="bfloat16", load_only=True),
    Point("sd3-noT5-256", "sd3-no-t5", "image", _image(256)),
    Point("sdxl-256", "sdxl", "image", _image(256)),
    Point("sdxl-bf16-256", "sdxl", "image", _image(256), dtype="bfloat16"),
    Point("sd15-768-cfg", "sd15", "image", _image(768, guidance_scale=7.5)),
    Point("sd3-noT5-512", "sd3-no-t5", "image", _image(512)),
    Point("triposr-256", "triposr", "mesh", {"mc_resolution": 256, "remove_background": False, "seed": 1}),
    Point("audio-30s", "stable-audio", "audio", {"prompt": "rain", "audio_end_in_s": 30.0,
                                                 "num_inference_steps": 1, "guidance_scale": 1.0, "seed": 1}),
]


# ---------------------------------------------------------------------------------------------- builders


def _save(pipe_or_model, folder: Path, tokenizers: dict | None = None) -> Path:
    import shutil

    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    pipe_or_model.save_pretrained(partial, safe_serialization=True)
    for name, source in (tokenizers or {}).items():
        shutil.rmtree(partial / name, ignore_errors=True)
        shutil.copytree(source, partial / name)
    partial.rename(folder)
    return folder


def _tiny(model_id: str) -> Path:
    from stablekit import hub
    from stablekit.registry import load_registry

    return hub.ensure_local(load_registry().get(model_id))


def _sd_vae(**more):
    from diffusers import AutoencoderKL

    return AutoencoderKL(block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                         up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=2, **more)


def _clip(hidden, layers, heads, inner, projection, act, with_projection=False):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(hidden_size=hidden, intermediate_size=inner, num_hidden_layers=layers,
                            num_attention_heads=heads, projection_dim=projection, hidden_act=act, vocab_size=49408,
                            max_position_embeddings=77)
    return (CLIPTextModelWithProjection if with_projection else CLIPTextModel)(config)


def build_sd(folder: Path, turbo: bool) -> None:
    """SD 1.5 (CLIP ViT-L, 768-d cross-attention) or SD-Turbo / SD 2.1 (OpenCLIP-H, 1024-d, linear projections)."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline, UNet2DConditionModel

    if turbo:
        unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=1024, attention_head_dim=(5, 10, 20, 20),
                                    use_linear_projection=True, block_out_channels=(320, 640, 1280, 1280))
        text_encoder = _clip(1024, 23, 16, 4096, 512, "gelu")
    else:
        unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768, attention_head_dim=8,
                                    block_out_channels=(320, 640, 1280, 1280))
        text_encoder = _clip(768, 12, 12, 3072, 768, "quick_gelu")
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       timestep_spacing="trailing")
    tiny = _tiny("tiny-sd")
    from transformers import CLIPTokenizer

    pipe = StableDiffusionPipeline(vae=_sd_vae(sample_size=512), text_encoder=text_encoder,
                                   tokenizer=CLIPTokenizer.from_pretrained(tiny / "tokenizer"), unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    _save(pipe, folder)


def build_sdxl(folder: Path) -> None:
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel

    tiny = _tiny("tiny-sdxl")
    from transformers import CLIPTokenizer

    unet = UNet2DConditionModel(
        sample_size=128, block_out_channels=(320, 640, 1280), layers_per_block=2,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20), cross_attention_dim=2048,
        use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=256,
        projection_class_embeddings_input_dim=2816)
    pipe = StableDiffusionXLPipeline(
        vae=_sd_vae(sample_size=1024, scaling_factor=0.13025), unet=unet,
        text_encoder=_clip(768, 12, 12, 3072, 768, "quick_gelu"),
        text_encoder_2=_clip(1280, 32, 20, 5120, 1280, "gelu", with_projection=True),
        tokenizer=CLIPTokenizer.from_pretrained(tiny / "tokenizer"),
        tokenizer_2=CLIPTokenizer.from_pretrained(tiny / "tokenizer_2"),
        scheduler=EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                         timestep_spacing="trailing"))
    _save(pipe, folder)


def build_sd3_no_t5(folder: Path) -> None:
    from diffusers import (
        AutoencoderKL,
        FlowMatchEulerDiscreteScheduler,
        SD3Transformer2DModel,
        StableDiffusion3Pipeline,
    )
    from transformers import CLIPTokenizer

    tiny = _tiny("tiny-sd3")
    transformer = SD3Transformer2DModel(sample_size=128, patch_size=2, in_channels=16, num_layers=24,
                                        attention_head_dim=64, num_attention_heads=24, joint_attention_dim=4096,
                                        caption_projection_dim=1536, pooled_projection_dim=2048, out_channels=16,
                                        pos_embed_max_size=192)
    vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=2, latent_channels=16,
                        sample_size=1024, use_quant_conv=False, use_post_quant_conv=False,
                        scaling_factor=1.5305, shift_factor=0.0609)
    pipe = StableDiffusion3Pipeline(
        transformer=transformer, vae=vae, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        text_encoder=_clip(768, 12, 12, 3072, 768, "quick_gelu", with_projection=True),
        text_encoder_2=_clip(1280, 32, 20, 5120, 1280, "gelu", with_projection=True),
        text_encoder_3=None, tokenizer=CLIPTokenizer.from_pretrained(tiny / "tokenizer"),
        tokenizer_2=CLIPTokenizer.from_pretrained(tiny / "tokenizer_2"), tokenizer_3=None)
    _save(pipe, folder)


def build_svd(folder: Path) -> None:
    from diffusers import AutoencoderKLTemporalDecoder, StableVideoDiffusionPipeline, UNetSpatioTemporalConditionModel
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    tiny = StableVideoDiffusionPipeline.from_pretrained(_tiny("tiny-svd"))
    encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=16, patch_size=14,
        image_size=224, projection_dim=1024, hidden_act="gelu"))
    # the released VAE's config (97.7 M parameters, 8x down); the class's defaults are a 1-block toy that leaves
    # the latents at full resolution
    vae = AutoencoderKLTemporalDecoder(block_out_channels=(128, 256, 512, 512), layers_per_block=2,
                                       down_block_types=("DownEncoderBlock2D",) * 4, latent_channels=4,
                                       sample_size=768, scaling_factor=0.18215, force_upcast=True)
    pipe = StableVideoDiffusionPipeline(vae=vae, image_encoder=encoder,
                                        unet=UNetSpatioTemporalConditionModel(), scheduler=tiny.scheduler,
                                        feature_extractor=tiny.feature_extractor)
    _save(pipe, folder)


def build_audio(folder: Path) -> None:
    from diffusers import AutoencoderOobleck, StableAudioDiTModel, StableAudioPipeline
    from diffusers.pipelines.stable_audio import StableAudioProjectionModel
    from transformers import T5Config, T5EncoderModel

    tiny = StableAudioPipeline.from_pretrained(_tiny("tiny-audio"))
    t5 = T5EncoderModel(T5Config(d_model=768, d_ff=3072, num_layers=12, num_heads=12, d_kv=64, vocab_size=32128))
    pipe = StableAudioPipeline(
        vae=AutoencoderOobleck(), text_encoder=t5, tokenizer=tiny.tokenizer, scheduler=tiny.scheduler,
        transformer=StableAudioDiTModel(),
        projection_model=StableAudioProjectionModel(text_encoder_dim=768, conditioning_dim=768, min_value=0,
                                                    max_value=512))
    _save(pipe, folder)


def build_lm(folder: Path) -> None:
    sys.path.insert(0, str(HERE))
    from text import build_1_6b

    build_1_6b(folder)


def build_triposr(folder: Path) -> None:
    import shutil

    import torch
    import yaml
    from safetensors.torch import save_file

    sys.path.insert(0, str(HERE))
    from mesh import OFFICIAL_SIZES

    from stablekit.models import triposr

    tiny = _tiny("tiny-triposr")
    data = yaml.safe_load((tiny / "config.yaml").read_text())
    for key, value in OFFICIAL_SIZES.items():
        data[key] = {**data[key], **value} if isinstance(value, dict) else value
    data["backbone"]["in_channels"] = 1024
    vit = json.loads((tiny / "vit_config.json").read_text())
    vit.update(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
               image_size=512, patch_size=16)
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    (partial / "config.yaml").write_text(yaml.safe_dump(data))
    (partial / "vit_config.json").write_text(json.dumps(vit))
    torch.manual_seed(0)
    model = triposr.build(triposr.load_config(partial), device="cpu")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, partial / "model.safetensors")
    partial.rename(folder)


BUILDERS = {"sd15": lambda f: build_sd(f, turbo=False), "sd-turbo": lambda f: build_sd(f, turbo=True),
            "sdxl": build_sdxl, "sd3-no-t5": build_sd3_no_t5, "svd": build_svd, "stable-audio": build_audio,
            "stablelm-1.6b": build_lm, "triposr": build_triposr}
# Safety only, before the planner has an estimate: fp32 weights and a little more (GiB).
ROUGH_GIB = {"sd15": 5.5, "sd-turbo": 6.5, "sdxl": 15.5, "sd3-no-t5": 13.5, "svd": 10.5, "stable-audio": 6.5,
             "stablelm-1.6b": 7.5, "triposr": 3.0}
SIXTEEN_BIT = {"sd15", "sd-turbo", "sdxl", "sd3-no-t5", "svd"}  # stored as bf16 like the fp16 releases; audio and
# TripoSR ship fp32 files, StableLM bf16 (its builder)


# Where the random weights are made: "cuda" makes SDXL's 3.5 B in seconds instead of a minute of CPU (the files
# are the same kind: random, stored the same way).
BUILD_DEVICE = os.environ.get("STABLEKIT_BUILD_DEVICE", "cpu")
# The tiny model each builder borrows tokenizers or a scheduler from, built first on the CPU like everywhere else.
TINY_OF = {"sd15": "tiny-sd", "sd-turbo": "tiny-sd", "sdxl": "tiny-sdxl", "sd3-no-t5": "tiny-sd3", "svd": "tiny-svd",
           "stable-audio": "tiny-audio", "triposr": "tiny-triposr"}


def build(arch: str, work: Path) -> Path:
    folder = work / arch
    if not folder.is_dir():
        tiny = f"memory._tiny({TINY_OF[arch]!r}); " if arch in TINY_OF else ""
        code = (f"import sys, torch; sys.path.insert(0, {str(HERE)!r}); import memory; {tiny}torch.manual_seed(0); "
                f"torch.set_default_dtype(torch.bfloat16 if {arch!r} in memory.SIXTEEN_BIT else torch.float32); "
                f"torch.set_default_device({BUILD_DEVICE!r}); "
                f"memory.BUILDERS[{arch!r}](memory.Path({str(folder)!r}))")
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        print(f"  built {arch} in {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    return folder


# ---------------------------------------------------------------------------------------------- measuring


def _hwm() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM")


def _reset_hwm() -> None:
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")


def picture(work: Path) -> Path:
    path = work / "input.png"
    if not path.is_file():
        from PIL import Image

        Image.new("RGB", (512, 512), (200, 120, 40)).save(path)
    return path


def job_and_plan(point: Point, folder: Path, work: Path, hardware=None):
    """The job, its plan on a roomy fake machine (no strategy is forced by lack of memory), then `strategy`."""
    from dataclasses import replace

    from stablekit import runner
    from stablekit.devices import Hardware
    from stablekit.jobs import job_from

    values = {**point.values, "model": str(folder), "device": hardware.accelerator if hardware else "cpu",
              "dtype": point.dtype}
    if point.command in ("video", "mesh"):
        values["image"] = str(picture(work))
    job = job_from(point.command, values)
    roomy = hardware or Hardware("cpu", "bench", 1024, 1024, 1024, 1024)
    plan = runner.plan_job(job, roomy)
    device_plan = replace(plan.device_plan, **point.strategy)
    # a folder is planned like its template record; its files' dtype is what this script stored
    memory = replace(plan.memory_spec.memory, file_bits=16 if point.arch in SIXTEEN_BIT | {"stablelm-1.6b"} else 32)
    return replace(plan, device_plan=device_plan, stages=(), memory_spec=replace(plan.memory_spec, memory=memory))


def child(spec: dict) -> None:
    """One measurement in this fresh process: load peak, then generation peak."""
    point, folder, work = Point(**spec["point"]), Path(spec["folder"]), Path(spec["work"])
    from stablekit import runner
    from stablekit.console import Progress
    from stablekit.sink import CaptureSink

    plan = job_and_plan(point, folder, work)
    engine = runner.engine_for(point.command)
    baseline = _hwm()
    started = time.perf_counter()
    session = engine.load(plan, Progress())
    load_peak = _hwm()
    gen_peak = 0
    note = None
    if not point.load_only:
        _reset_hwm()
        try:
            session.run(plan, CaptureSink(), {})
        except Exception as err:  # random full-size TripoSR weights: a density with no surface, after the forward
            if type(err).__name__ != "EmptySurfaceError":
                raise
            note = "no surface from random weights (peak after the forward pass and grid queries)"
        gen_peak = _hwm()
    print(json.dumps({"baseline": baseline / GIB, "load": load_peak / GIB, "generate": gen_peak / GIB,
                      "seconds": round(time.perf_counter() - started, 1), "note": note}))


def measure(point: Point, work: Path, timeout: float) -> dict:
    folder = build(point.arch, work)
    spec = {"point": point.__dict__, "folder": str(folder), "work": str(work)}
    env = {**os.environ, "STABLEKIT_HOME": str(work / "home"), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)],
                            capture_output=True, text=True, env=env, timeout=timeout)
    if result.returncode != 0:
        return {"error": result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "failed"}
    return json.loads(result.stdout.strip().splitlines()[-1])


def available_gib() -> float:
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024**2
    return 0.0


# ---------------------------------------------------------------------------------------------- predicting


def predict(point: Point, work: Path) -> dict:
    """The planner's estimate for this point: whole-process peak, load peak, generation peak (GiB)."""
    from stablekit import memory_plan

    folder = work / point.arch
    if not folder.is_dir():
        return {}
    plan = job_and_plan(point, folder, work)
    estimate = memory_plan.estimate_plan(plan.memory_spec, plan.workload, plan.device_plan)
    if point.load_only:
        return {"peak": estimate.load, "load": estimate.load, "generate": 0.0}
    return {"peak": estimate.peak, "load": estimate.load, "generate": estimate.generate}


def table(results: dict, work: Path) -> int:
    rows = []
    for point in POINTS:
        measured = results.get(point.name)
        if not measured:
            continue
        if "skipped" in measured or "error" in measured:
            print(f"{point.name:<26} {measured.get('skipped') or measured.get('error')}")
            continue
        peak = max(measured["load"], measured["generate"])
        predicted = predict(point, work)
        ratio = predicted["peak"] / peak
        rows.append((abs(math.log(ratio)), point, measured, predicted, peak, ratio))
    rows.sort(key=lambda row: row[0])
    print(f"\n{'point':<26}{'dtype':>9}{'load':>7}{'(pred)':>8}{'gen':>7}{'(pred)':>8}{'measured':>10}"
          f"{'predicted':>11}{'ratio':>7}")
    for _, point, measured, predicted, peak, ratio in rows:
        gen = f"{measured['generate']:>7.2f}{predicted['generate']:>8.2f}" if not point.load_only else f"{'-':>15}"
        print(f"{point.name:<26}{point.dtype:>9}{measured['load']:>7.2f}{predicted['load']:>8.2f}{gen}{peak:>10.2f}"
              f"{predicted['peak']:>11.2f}{ratio:>7.2f}")
    if rows:
        worst = rows[-1]
        print(f"worst: {worst[1].name} predicted/measured {worst[5]:.2f} (GiB of resident memory, whole process)")
    return 0 if all(0.8 <= row[5] <= 1.25 for row in rows) else 1


ORDER = (  # cheapest and most telling first
    "sd-turbo-256", "sd-turbo-512", "sd-turbo-bf16-load", "lm-1.6b-128", "sdxl-bf16-load", "svd-2f-256x448",
    "triposr", "sd15-512-cfg", "audio-10s", "sd3-noT5-256", "lm-1.6b-1k", "svd-4f-256x448", "svd-4f-chunk1",
    "sd-turbo-512-b2", "sd-turbo-512-b2-slicing", "sd-turbo-768-tiling", "sdxl-256", "sdxl-bf16-256",
    "sd15-768-cfg", "audio-30s", "sd3-noT5-512", "triposr-256",
)
POINTS.sort(key=lambda p: ORDER.index(p.name))


def cuda_table(work: Path) -> int:
    """Peak CUDA allocations per model x strategy against the plan for this GPU (needs CUDA)."""
    import torch

    if not torch.cuda.is_available():
        print("--cuda: no CUDA device here; nothing measured")
        return 0
    code = HERE.parent / "tests" / "gpu" / "test_memory_gpu.py"
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "gpu", str(code), "-s"]).returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", help="comma-separated point names (default: all)")
    parser.add_argument("--work-dir", default=os.path.join(tempfile.gettempdir(), "stablekit-memory"))
    parser.add_argument("--results", help="JSON of measured peaks (default: WORK_DIR/results.json)")
    parser.add_argument("--reprint", action="store_true", help="print the table from --results, measure nothing")
    parser.add_argument("--margin-gib", type=float, default=3.0, help="free RAM to leave beside a measurement")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per point")
    parser.add_argument("--cuda", action="store_true", help="measure CUDA peaks per strategy instead")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(json.loads(args.child))
        return 0
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    os.environ.update(STABLEKIT_HOME=str(work / "home"), HF_HUB_OFFLINE="1")
    if args.cuda:
        return cuda_table(work)
    path = Path(args.results) if args.results else work / "results.json"
    results = json.loads(path.read_text()) if path.is_file() else {}
    chosen = [p for p in POINTS if not args.points or p.name in args.points.split(",")]
    if not args.reprint:
        for point in chosen:
            try:
                predicted = predict(point, work).get("peak")
            except (ImportError, AttributeError):  # before the planner can estimate: a rough figure
                predicted = None
            predicted = predicted or ROUGH_GIB[point.arch] * (0.6 if point.dtype != "float32" else 1.0)
            need = predicted + args.margin_gib
            free = available_gib()
            if free < need:
                results[point.name] = {"skipped": f"skipped: {free:.1f} GiB available < {predicted:.1f} GiB "
                                                  f"predicted + {args.margin_gib:g} GiB margin"}
                print(f"{point.name}: {results[point.name]['skipped']}", file=sys.stderr, flush=True)
            else:
                print(f"{point.name}: measuring ({free:.1f} GiB available)", file=sys.stderr, flush=True)
                try:
                    results[point.name] = measure(point, work, args.timeout)
                except subprocess.TimeoutExpired:
                    results[point.name] = {"error": f"timed out after {args.timeout:g} s"}
                print(f"  {results[point.name]}", file=sys.stderr, flush=True)
            path.write_text(json.dumps(results, indent=2))
    return table(results, work)


if __name__ == "__main__":
    sys.exit(main())
