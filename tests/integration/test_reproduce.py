"""`stablekit reproduce --verify` on real outputs of every modality (tiny models, CPU): the recorded job runs
again and the verdict is "identical"; `info --json` gives back the job; a record from another dtype and
library version (and a file that differs) gets "differs, expected because ..."."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from conftest import run_cli

PICTURE = "picture.png"
RUNS = {
    "image": (["image", "a cat", "-m", "tiny-sd", "--seed", "1", "-n", "2", "-o", "cat.png"], "cat-1.png"),
    "audio": (["audio", "rain", "-m", "tiny-audio", "--seed", "2", "--seconds", "0.5", "-n", "2", "-o", "rain.flac"],
              "rain-1.flac"),
    "video": (["video", "--image", PICTURE, "-m", "tiny-svd", "--frames", "3", "--seed", "5", "-o", "boat.mp4"],
              "boat.mp4"),
    "mesh": (["mesh", "--image", PICTURE, "-m", "tiny-triposr", "--no-remove-bg", "-o", "chair.glb"], "chair.glb"),
}


def reproduce(*args: str):
    result = run_cli("reproduce", *args, "--json")
    assert result.returncode in (0, 1), result.stderr
    return result.returncode, json.loads(result.stdout)


@pytest.fixture
def picture(tmp_path) -> Path:
    Image.new("RGB", (48, 40), (30, 90, 200)).save(tmp_path / PICTURE)
    return tmp_path / PICTURE


@pytest.mark.parametrize("command", list(RUNS))
def test_outputs_of_every_modality_reproduce_identically(tmp_path, picture, command):
    argv, name = RUNS[command]
    made = run_cli(*argv, "-q")
    assert made.returncode == 0, made.stderr
    job = json.loads(Path(f"{name}.json").read_text())["parameters"]

    shown = run_cli("info", "--json", name)
    assert shown.returncode == 0, shown.stderr
    assert {k: v for k, v in json.loads(shown.stdout).items() if k in job and k != "seed"} == \
        {k: v for k, v in job.items() if k in json.loads(shown.stdout) and k != "seed"}

    code, verdict = reproduce(name, "--verify")
    assert code == 0 and verdict["identical"], verdict
    assert verdict["verdict"].startswith("identical"), verdict
    assert verdict["path"] is None and sorted(p.name for p in tmp_path.glob("*reproduced*")) == []


def test_text_reproduces_identically(tmp_path):
    from stablekit import runner
    from stablekit.jobs import job_from
    from stablekit.sink import Sink

    job = job_from("text", {"prompt": "Hello", "model": "tiny-lm", "max_new_tokens": 6, "seed": 3,
                            "output": "hello.txt"})
    runner.run([job], Sink(tmp_path))
    code, verdict = reproduce("hello.txt", "--verify", "-o", "again.txt")
    assert code == 0 and verdict["verdict"] == "identical bytes", verdict
    assert Path("again.txt").read_text() == Path("hello.txt").read_text()
    assert json.loads(Path("again.txt.json").read_text())["parameters"]["seed"] == 3

    # -q as on the generating commands: the verdict only, no plan or progress lines.
    loud = run_cli("reproduce", "hello.txt", "--verify")
    quiet = run_cli("reproduce", "hello.txt", "--verify", "-q")
    assert loud.returncode == quiet.returncode == 0, quiet.stderr
    assert "plan:" in loud.stderr and quiet.stderr == ""
    assert quiet.stdout == loud.stdout == "identical bytes\n"


def test_a_changed_text_names_its_first_differing_token(tmp_path):
    """The verdict counts in the model's tokens: a text changed from its fourth token on is told so."""
    from transformers import AutoTokenizer

    from stablekit import hub, runner
    from stablekit.jobs import job_from
    from stablekit.sink import Sink

    job = job_from("text", {"prompt": "Hello", "model": "tiny-lm", "max_new_tokens": 8, "seed": 3,
                            "output": "hello.txt"})
    runner.run([job], Sink(tmp_path))
    tokenizer = AutoTokenizer.from_pretrained(hub.ensure_local(job.spec), local_files_only=True)
    text = Path("hello.txt").read_text()
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert len(ids) >= 5
    kept = tokenizer.decode(ids[:3])
    Path("hello.txt").write_text(kept + "\u2603" + text[len(kept) + 1:])
    code, verdict = reproduce("hello.txt", "--verify")
    assert code == 1 and verdict["first_differing_token"] == 4 and verdict["first_difference"] == len(kept), verdict
    assert "first differing token is token 4" in verdict["verdict"]


def test_a_record_from_another_dtype_and_library_version_differs_as_expected(tmp_path):
    made = run_cli("image", "a cat", "-m", "tiny-sd", "--seed", "1", "-o", "cat.png", "-q")
    assert made.returncode == 0, made.stderr
    sidecar = json.loads(Path("cat.png.json").read_text())
    sidecar["device_plan"]["dtype"] = "float16"
    sidecar["versions"]["diffusers"] = "0.20.0"
    Path("cat.png.json").write_text(json.dumps(sidecar))
    with Image.open("cat.png") as image:  # as if rendered elsewhere: one pixel differs, the record is kept
        info = PngInfo()
        for key, value in image.info.items():
            info.add_text(key, value) if key == "parameters" else info.add_itxt(key, value)
        pixels = image.convert("RGB")
    pixels.putpixel((3, 3), tuple(255 - c for c in pixels.getpixel((3, 3))))
    pixels.save("cat.png", pnginfo=info)

    result = run_cli("reproduce", "cat.png", "--verify")
    assert result.returncode == 1, result.stderr
    first, second = result.stdout.splitlines()[:2]
    assert first.startswith("differs: largest pixel difference") and "PSNR" in first
    assert second.startswith("differs, expected because ")
    assert "dtype float32 here, float16 in the record" in second
    assert re.search(r"diffusers \S+ here, 0\.20\.0 in the record", second), second


def test_a_file_without_a_stablekit_record_exits_2(tmp_path):
    Image.new("RGB", (8, 8)).save("plain.png")
    result = run_cli("reproduce", "plain.png", "--verify")
    assert result.returncode == 2 and "no generation record" in result.stderr


def test_jobs_from_sidecars_gives_each_job_once(tmp_path):
    from stablekit.jobs import job_from
    from stablekit.reproduce import jobs_from_sidecars
    from stablekit.writers.sidecar import write_sidecar

    job = job_from("image", {"prompt": "fox", "model": "tiny-sd", "seed": 7, "num_images": 2}).to_dict()
    other = job_from("audio", {"prompt": "rain", "model": "tiny-audio", "seed": 1}).to_dict()
    for index in (0, 1):
        path = tmp_path / f"fox-{index}.png"
        path.write_bytes(b"")
        write_sidecar(path, {"output": path.name, "parameters": {**job, "seed": 7 + index, "index": index}})
    write_sidecar(tmp_path / "rain.wav", {"output": "rain.wav", "parameters": {**other, "index": 0}})
    (tmp_path / "notes.json").write_text("{}")
    jobs = jobs_from_sidecars(tmp_path)
    assert [(name, j.to_dict()) for name, j in jobs] == [("fox-0.png.json", job), ("rain.wav.json", other)]
