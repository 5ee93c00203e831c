"""`stablekit image` end to end on the tiny models, through the CLI in-process (Ctrl-C in a real process)."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from conftest import run_cli


@pytest.mark.parametrize("model", ["tiny-sd", "tiny-sdxl", "tiny-sd3"])
def test_txt2img_writes_reproducible_pngs_with_provenance(model, tmp_path):
    first = run_cli("image", "a lighthouse at dusk", "--model", model, "-n", "2", "--seed", "5", "--json",
                    "-d", str(tmp_path / "a"))
    assert first.returncode == 0, first.stderr
    records = [json.loads(line) for line in first.stdout.splitlines()]
    assert [r["seed"] for r in records] == [5, 6]
    paths = [r["path"] for r in records]
    for path in paths:
        with Image.open(path) as image:
            assert image.size == (64, 64) and image.mode == "RGB"
            params = image.text["parameters"]
            assert params.startswith("a lighthouse at dusk") and f"Model: {model}" in params and "Steps: 2" in params
            assert json.loads(image.text["stablekit"])["model"] == model
    sidecar = json.loads(open(records[0]["sidecar"]).read())
    assert sidecar["model"]["id"] == model and sidecar["parameters"]["seed"] == 5
    assert sidecar["device_plan"]["device"] == "cpu" and sidecar["versions"]["diffusers"]

    again = run_cli("image", "a lighthouse at dusk", "--model", model, "--seed", "5", "-q",
                    "-d", str(tmp_path / "b"))
    assert again.returncode == 0, again.stderr
    with open(paths[0], "rb") as a, open(again.stdout.strip(), "rb") as b:
        assert a.read() == b.read(), "the same seed must give the same bytes"
    with Image.open(paths[0]) as a, Image.open(paths[1]) as b:
        assert a.tobytes() != b.tobytes(), "a different seed must give different pixels"
    alone = run_cli("image", "a lighthouse at dusk", "--model", model, "--seed", "6", "-q", "-d", str(tmp_path / "c"))
    with open(paths[1], "rb") as a, open(alone.stdout.strip(), "rb") as b:
        assert a.read() == b.read(), "image i of a run is image seed+i rendered alone"


def test_outputs_follow_the_template_and_never_overwrite(tmp_path):
    args = ["image", "cat", "--model", "tiny-sd", "--seed", "1", "-q", "-d", str(tmp_path),
            "-o", "renders/{model}-{seed}-{index}.png"]
    first, second = run_cli(*args), run_cli(*args)
    assert first.stdout.strip() == str(tmp_path / "renders" / "tiny-sd-1-0.png")
    assert second.stdout.strip() == str(tmp_path / "renders" / "tiny-sd-1-0-2.png")
    third = run_cli(*args, "--overwrite")
    assert third.stdout.strip() == first.stdout.strip()
    assert sorted(p.name for p in (tmp_path / "renders").iterdir()) == [
        "tiny-sd-1-0-2.png", "tiny-sd-1-0-2.png.json", "tiny-sd-1-0.png", "tiny-sd-1-0.png.json"]


def test_drawn_seed_is_printed_and_recorded(tmp_path):
    result = run_cli("image", "cat", "--model", "tiny-sd", "--json", "-d", str(tmp_path))
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert f"seed {record['seed']}" in result.stderr
    with Image.open(record["path"]) as image:
        assert f"Seed: {record['seed']}" in image.text["parameters"]


def test_preset_then_flags(tmp_path):
    result = run_cli("image", "cat", "--preset", "smoke", "--width", "32", "--json", "-d", str(tmp_path))
    assert result.returncode == 0, result.stderr
    with Image.open(json.loads(result.stdout)["path"]) as image:
        assert image.size == (32, 64)


def test_readme_offline_command_works_as_written(tmp_path):
    import shlex

    from conftest import ROOT

    readme = (ROOT / "README.md").read_text()
    command = next(line for line in readme.splitlines() if line.endswith("--model tiny-sd"))
    argv = shlex.split(command)
    assert argv[0] == "stablekit"
    result = run_cli(*argv[1:], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    written = tmp_path / result.stdout.strip()
    assert written.is_file() and written.name.startswith("a-lighthouse-at-dusk-")
    with Image.open(written) as image:
        assert image.size == (64, 64)


def test_ctrl_c_keeps_finished_images_and_exits_130(tmp_path):
    import os
    import signal
    import subprocess
    import sys

    process = subprocess.Popen([sys.executable, "-m", "stablekit", "image", "cat", "--model", "tiny-sd", "-n", "200",
                                "--seed", "1", "-d", str(tmp_path)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=os.environ)
    first = process.stdout.readline()  # the first image is on disk: now interrupt the batch
    process.send_signal(signal.SIGINT)
    rest, _ = process.communicate(timeout=120)
    assert process.returncode == 130
    printed = [first.strip(), *rest.split()]
    pngs = sorted(tmp_path.glob("*.png"))
    assert 1 <= len(pngs) < 200 and sorted(map(str, pngs)) == sorted(printed)
    assert not [p for p in tmp_path.iterdir() if ".partial" in p.name]
    for png in pngs:
        with Image.open(png) as image:
            image.load()
        assert (tmp_path / (png.name + ".json")).is_file()
