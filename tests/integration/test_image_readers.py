"""Real outputs of `stablekit image` read by a third-party A1111 metadata reader (sd-parsers), and the sampler
name they record whichever way the scheduler was picked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from conftest import run_cli
from stablekit.writers.image import read_parameters

sd_parsers = pytest.importorskip("sd_parsers", reason="pip install -e '.[dev]' installs sd-parsers")


def render(tmp_path: Path, name: str, *extra: str) -> Path:
    result = run_cli("image", "a lighthouse at dusk", "-m", "tiny-sd", "--seed", "11", "--steps", "3",
                     "--negative", "fog", "-q", "-d", str(tmp_path), "-o", name, *extra)
    assert result.returncode == 0, result.stderr
    return Path(result.stdout.strip())


def test_png_jpeg_and_webp_parse_with_sd_parsers(tmp_path):
    manager = sd_parsers.ParserManager()
    for name in ("out.png", "out.jpg", "out.webp"):
        info = manager.parse(render(tmp_path, name))
        assert info is not None, name
        assert info.generator.name == "AUTOMATIC1111", name
        (sampler,) = info.samplers
        assert sampler.name == "PLMS", name
        assert sampler.parameters == {"cfg_scale": "7.5", "seed": "11", "steps": "3"}, name
        assert [p.value for p in sampler.prompts] == ["a lighthouse at dusk"], name
        assert [p.value for p in sampler.negative_prompts] == ["fog"], name
        assert sampler.model.name == "tiny-sd", name
        assert info.metadata["Size"] == "64x64", name


def test_same_pixels_same_sampler_name_whichever_way_the_scheduler_was_picked(tmp_path):
    """tiny-sd's own scheduler is PNDM: the default and --scheduler pndm draw the same pixels and say so alike."""
    default = render(tmp_path, "default.png")
    chosen = render(tmp_path, "chosen.png", "--scheduler", "pndm")
    with Image.open(default) as a, Image.open(chosen) as b:
        assert a.tobytes() == b.tobytes()
    lines = [read_parameters(path).splitlines()[-1] for path in (default, chosen)]
    assert "Sampler: PLMS," in lines[0] and lines[0] == lines[1]
    sidecars = [json.loads(Path(f"{path}.json").read_text())["parameters"]["sampler"] for path in (default, chosen)]
    assert sidecars == ["PLMS", "PLMS"]
