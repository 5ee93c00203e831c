"""`--model ./folder` with fp16 files: saved with `save_pretrained(variant="fp16")` only, or beside the full files
(a clone of a hub repository). Which files a run reads is told apart by giving the fp16 files other weights."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from PIL import Image

from conftest import run_cli

COMPONENTS = ("unet", "text_encoder", "vae")


def save_fp16(source: Path, target: Path, seed: int) -> None:
    """Every model component of `source` again as `variant="fp16"` files in `target`, re-drawn from `seed` (so
    an image tells which files it came from)."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel

    torch.manual_seed(seed)
    for name, cls in zip(COMPONENTS, (UNet2DConditionModel, CLIPTextModel, AutoencoderKL), strict=True):
        model = cls.from_pretrained(source / name)
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.normal_(0, 0.05)
        model.to(torch.float16).save_pretrained(target / name, variant="fp16")


@pytest.fixture
def folders(tmp_path) -> dict[str, Path]:
    from stablekit import hub
    from stablekit.registry import load_registry

    base = tmp_path / "variants"
    tiny = hub.ensure_local(load_registry().get("tiny-sd"))
    full = base / "full"
    shutil.copytree(tiny, full)
    both = base / "both"
    shutil.copytree(tiny, both)
    save_fp16(tiny, both, seed=3)
    only = base / "fp16-only"
    shutil.copytree(tiny, only)
    for name in COMPONENTS:
        for weights in (only / name).glob("*.safetensors"):
            weights.unlink()
    save_fp16(tiny, only, seed=3)
    return {"full": full, "both": both, "fp16-only": only}


def render(folder: Path, out: Path, *dtype: str) -> bytes:
    result = run_cli("image", "a cat", "--model", str(folder), "--seed", "4", "-q", "-o", str(out), *dtype)
    assert result.returncode == 0, result.stderr
    with Image.open(out) as image:
        return image.tobytes()


def test_a_folder_saved_with_only_fp16_files_renders_in_either_precision(folders, tmp_path):
    for dtype in ((), ("--dtype", "bfloat16")):
        pixels = render(folders["fp16-only"], tmp_path / f"only{len(dtype)}.png", *dtype)
        assert pixels and len(set(pixels)) > 1


def test_float32_reads_the_full_files_and_16_bit_the_fp16_ones(folders, tmp_path):
    full = render(folders["full"], tmp_path / "full.png")
    assert render(folders["both"], tmp_path / "both.png") == full  # the fp16 files (other weights) unread
    half = render(folders["fp16-only"], tmp_path / "half.png", "--dtype", "bfloat16")
    assert render(folders["both"], tmp_path / "both-bf16.png", "--dtype", "bfloat16") == half
    assert half != render(folders["full"], tmp_path / "full-bf16.png", "--dtype", "bfloat16")


def test_a_folder_missing_a_components_weights_is_one_error_line(folders, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(folders["full"], broken)
    for weights in (broken / "unet").glob("*.safetensors"):
        weights.unlink()
    result = run_cli("image", "a cat", "--model", str(broken), "--seed", "1", "-q", "-d", str(tmp_path))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("Error: cannot load broken") and "diffusion_pytorch_model" in lines[0], lines
    assert len(lines) == 2 and lines[1].startswith("Hint: "), lines  # diffusers' own log of it is not repeated
