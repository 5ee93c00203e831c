"""Options that would do nothing are warned about and recorded as unused, never as if they had an effect; `-o`
names a folder or a numbered template as the user means it."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import run_cli


def _sidecar(path: str) -> dict:
    return json.loads(Path(path + ".json").read_text())["parameters"]


def test_a_negative_prompt_without_guidance_is_warned_about_and_recorded_unused(tmp_path):
    from stablekit.writers.image import read_parameters

    result = run_cli("image", "a cat", "-m", "tiny-sd", "--guidance", "1", "--negative", "blurry", "--seed", "1",
                     "-d", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    assert "Warning: --negative is ignored: at --guidance 1" in result.stderr
    params = _sidecar(result.stdout.strip())
    assert params["negative_prompt"] == "blurry" and "no effect" in params["ignored"]["negative_prompt"]
    assert "Negative prompt" not in read_parameters(Path(result.stdout.strip()))  # not embedded as if it worked


def test_audio_says_the_same(tmp_path):
    result = run_cli("audio", "rain", "-m", "tiny-audio", "--seconds", "0.5", "--guidance", "1", "--negative", "wind",
                     "--seed", "1", "-d", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    assert "Warning: --negative is ignored" in result.stderr
    assert "negative_prompt" in _sidecar(result.stdout.strip())["ignored"]


def test_o_folder_and_number_formats(tmp_path):
    (tmp_path / "shots").mkdir()
    result = run_cli("image", "a cat", "-m", "tiny-sd", "-n", "2", "--seed", "4", "-o", "shots", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["shots/a-cat-4.png", "shots/a-cat-5.png"]
    result = run_cli("image", "a cat", "-m", "tiny-sd", "-n", "2", "--seed", "4", "-o", "new/{index:03d}.png",
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["new/000.png", "new/001.png"]
