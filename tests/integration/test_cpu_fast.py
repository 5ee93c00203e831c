"""The CPU fast paths on tiny models: bf16 planned and recorded on a (faked) bf16 CPU with sane outputs in every
family, `--decoder tiny` in every image family (refused for SVD), `--quantize int8` for text, `--fast` refused
off CUDA, and `--compile` giving the image it gives without."""

from __future__ import annotations

import json
import os
import wave
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import run_cli


def run_ok(*args, **kw):
    result = run_cli(*args, **kw)
    assert result.returncode == 0, result.stderr
    return result


def records(result) -> list[dict]:
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


def sidecar(record: dict) -> dict:
    return json.loads(Path(record["sidecar"]).read_text())


def pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)


def assert_sane_image(path) -> None:
    image = pixels(path)
    assert np.isfinite(image).all() and image.max() > 0 and image.std() > 0, f"{path}: black or flat"


@pytest.mark.parametrize("model", ["tiny-sd", "tiny-sdxl", "tiny-sd3"])
def test_bf16_cpu_plans_records_and_renders_images(bf16_cpu, model):
    result = run_ok("image", "a fox", "-m", model, "--seed", "3", "--json", "-o", f"{model}.png")
    (record,) = records(result)
    plan = sidecar(record)["device_plan"]
    assert plan["dtype"] == "bfloat16"
    assert any(r.startswith("dtype bfloat16: this CPU computes") for r in plan["reasons"])
    assert "this CPU computes" in result.stderr  # the reason is said, not only recorded
    assert "NaN" not in result.stderr
    assert_sane_image(record["path"])


def test_dtype_float32_keeps_full_precision_on_a_bf16_cpu(bf16_cpu):
    (record,) = records(run_ok("image", "a fox", "-m", "tiny-sd", "--seed", "3", "--dtype", "float32", "--json"))
    assert sidecar(record)["device_plan"]["dtype"] == "float32"


def test_bf16_cpu_video_is_sane(bf16_cpu, tmp_path):
    source = tmp_path / "first.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(source)
    (record,) = records(run_ok("video", "-i", str(source), "-m", "tiny-svd", "--seed", "1", "-f", "frames",
                               "--json", "-o", "clip"))
    assert sidecar(record)["device_plan"]["dtype"] == "bfloat16"
    frames = sorted(Path(record["path"]).glob("*.png"))
    assert frames
    for frame in frames:
        assert np.isfinite(pixels(frame)).all()
    assert max(pixels(frame).max() for frame in frames) > 0


def test_bf16_cpu_audio_is_sane(bf16_cpu):
    (record,) = records(run_ok("audio", "rain", "-m", "tiny-audio", "--seed", "1", "--json", "-o", "rain.wav"))
    assert sidecar(record)["device_plan"]["dtype"] == "bfloat16"
    with wave.open(record["path"]) as clip:
        samples = np.frombuffer(clip.readframes(clip.getnframes()), dtype=np.int16)
    assert samples.size and np.abs(samples).max() > 0


def test_bf16_cpu_text_is_sane(bf16_cpu):
    result = run_ok("text", "Once upon a time", "-m", "tiny-lm", "--temperature", "0", "--max-tokens", "8",
                    "--min-tokens", "8", "--json")
    (record,) = records(result)
    assert record["completion_tokens"] == 8
    plan = json.loads(run_ok("text", "x", "-m", "tiny-lm", "--dry-run", "--json").stdout)
    assert plan["plan"]["dtype"] == "bfloat16"


def test_bf16_cpu_mesh_stays_in_full_precision(bf16_cpu, tmp_path):
    source = tmp_path / "chair.png"
    Image.new("RGB", (64, 64), (128, 128, 128)).save(source)
    plan = run_ok("mesh", "-i", str(source), "-m", "tiny-triposr", "--no-remove-bg", "--dry-run", "--json").stdout
    plan = json.loads(plan.splitlines()[-1])
    assert plan["plan"]["dtype"] == "float32"


@pytest.mark.parametrize(("model", "decoder"), [("tiny-sd", "tiny-taesd"), ("tiny-sdxl", "tiny-taesdxl"),
                                                ("tiny-sd3", "tiny-taesd3")])
def test_tiny_decoder_renders_every_image_family_and_is_recorded(model, decoder):
    full = records(run_ok("image", "a fox", "-m", model, "--seed", "4", "--json", "-o", "full.png"))[0]
    result = run_ok("image", "a fox", "-m", model, "--seed", "4", "--decoder", "tiny", "--json", "-o", "tiny.png")
    (tiny,) = records(result)
    assert f"Loading the tiny decoder {decoder}" in result.stderr
    assert sidecar(tiny)["parameters"]["decoder"] == "tiny" and sidecar(full)["parameters"]["decoder"] == "full"
    assert_sane_image(tiny["path"])
    assert pixels(tiny["path"]).shape == pixels(full["path"]).shape
    assert not np.array_equal(pixels(tiny["path"]), pixels(full["path"]))  # another decoder drew it


def test_tiny_decoder_with_img2img(tmp_path):
    source = tmp_path / "in.png"
    Image.new("RGB", (64, 64), (200, 120, 40)).save(source)
    (record,) = records(run_ok("image", "a fox", "-m", "tiny-sd", "-i", str(source), "--decoder", "tiny", "--json"))
    assert_sane_image(record["path"])


def test_tiny_decoder_is_refused_for_svd(tmp_path):
    source = tmp_path / "first.png"
    Image.new("RGB", (32, 32), (200, 120, 40)).save(source)
    result = run_cli("video", "-i", str(source), "-m", "tiny-svd", "--decoder", "tiny")
    assert result.returncode == 2, result.stderr
    assert "--decoder tiny: tiny-svd (svd) has no tiny decoder" in result.stderr
    assert not list(tmp_path.glob("*.mp4"))


def test_a_batch_line_with_an_unknown_decoder_is_refused():
    result = run_cli("image", "a fox", "-m", "tiny-sd", "--decoder", "huge")
    assert result.returncode == 2 and "huge" in result.stderr


def test_fast_is_refused_off_cuda():
    result = run_cli("image", "a fox", "-m", "tiny-sd", "--fast", "--device", "cpu")
    assert result.returncode == 2, result.stderr
    assert "--fast is for CUDA GPUs" in result.stderr and "--compile" in result.stderr


def test_quantize_int8_runs_is_recorded_and_keeps_float32():
    result = run_ok("text", "Once upon a time", "-m", "tiny-lm", "--temperature", "0", "--max-tokens", "6",
                    "--min-tokens", "6", "--quantize", "int8", "--json")
    (record,) = records(result)
    assert record["completion_tokens"] == 6
    plan = json.loads(run_ok("text", "x", "-m", "tiny-lm", "--quantize", "int8", "--dry-run", "--json").stdout)
    assert plan["plan"]["dtype"] == "float32" and plan["job"]["quantize"] == "int8"
    assert any("int8 weights" in reason for reason in plan["plan"]["reasons"])


def test_quantize_int8_does_not_mix_with_bf16():
    result = run_cli("text", "x", "-m", "tiny-lm", "--quantize", "int8", "--dtype", "bfloat16")
    assert result.returncode == 2 and "does not mix" in result.stderr


def test_quantize_int8_quantizes_the_linear_layers(tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    from stablekit import hub
    from stablekit.engines.text import quantize_int8
    from stablekit.registry import load_registry

    folder = hub.ensure_local(load_registry().get("tiny-lm"))
    model = quantize_int8(AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32))
    modules = list(model.modules())
    assert any(isinstance(m, torch.ao.nn.quantized.dynamic.Linear) for m in modules)
    assert not any(type(m) is torch.nn.Linear for m in modules)  # every linear layer, the output head too


@pytest.mark.slow  # the first torch.compile of even a tiny UNet takes minutes on a busy 2-core machine
@pytest.mark.skipif(not os.environ.get("STABLEKIT_SLOW_TESTS"),
                    reason="torch.compile takes many minutes on a 2-core CPU; STABLEKIT_SLOW_TESTS=1 runs it")
def test_compile_gives_the_same_image(tmp_path):
    plain = records(run_ok("image", "a fox", "-m", "tiny-sd", "--seed", "5", "--json", "-o", "plain.png"))[0]
    result = run_ok("image", "a fox", "-m", "tiny-sd", "--seed", "5", "--compile", "--json", "-o", "compiled.png")
    (compiled,) = records(result)
    assert "--compile: the unet is compiled" in result.stderr
    assert sidecar(compiled)["parameters"]["compile"] is True
    difference = np.abs(pixels(compiled["path"]) - pixels(plain["path"]))
    assert difference.max() <= 2  # float reassociation in fused kernels moves a pixel by a level at most
    from stablekit.engines.image import _compile_cache_dir

    assert any(_compile_cache_dir().iterdir())  # the cache is kept under STABLEKIT_HOME
