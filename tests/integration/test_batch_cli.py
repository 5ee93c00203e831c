"""`stablekit batch` end to end on the tiny models: every modality in one file, resume, failures, memory, dry runs.

Interrupts and kills are in test_batch_signals.py (they need real processes).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import run_cli
from stablekit.manifest import NAME

ALL_TINY = {"tiny-sd", "tiny-svd", "tiny-audio", "tiny-triposr", "tiny-lm"}


@pytest.fixture
def picture(tmp_path) -> Path:
    """An RGBA object on a transparent background (TripoSR's input; no background removal needed)."""
    pixels = np.zeros((60, 80, 4), np.uint8)
    pixels[10:50, 20:60] = [200, 30, 30, 255]
    pixels[20:40, 30:70] = [20, 200, 40, 255]
    path = tmp_path / "chair.png"
    Image.fromarray(pixels).save(path)
    return path


def write_jobs(path: Path, lines: list) -> Path:
    path.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n")
    return path


def batch(*args: str, code: int = 0, input: str | None = None) -> tuple[list[dict], str]:
    result = run_cli("batch", *args, "--json", input=input)
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()], result.stderr


def by_id(records: list[dict]) -> dict[str, dict]:
    return {record["id"]: record for record in records}


def sidecar(path: str) -> dict:
    return json.loads(Path(path + ".json").read_text())


def test_a_mixed_file_renders_everything_then_skips_it_then_redoes_only_an_edited_line(tmp_path, picture):
    jobs = write_jobs(tmp_path / "jobs.jsonl", [
        "# one of each, and a text-to-video that draws its first frame with the image lines' model",
        {"command": "image", "prompt": "a fox", "model": "tiny-sd", "id": "fox"},
        {"command": "image", "prompt": "a cat", "model": "tiny-sd", "num_images": 2},
        "",
        {"command": "video", "prompt": "a boat", "model": "tiny-svd", "image_model": "tiny-sd", "id": "boat"},
        {"command": "audio", "prompt": "waves", "model": "tiny-audio", "id": "waves"},
        {"command": "mesh", "image": str(picture), "model": "tiny-triposr", "id": "chair"},
        {"command": "text", "prompt": "hello", "model": "tiny-lm", "max_new_tokens": 8, "id": "hello"},
    ])
    out = tmp_path / "out"
    records, _ = batch(str(jobs), "-d", str(out))
    done = by_id(records)
    cat = next(job_id for job_id in done if job_id.startswith("image-"))
    assert set(done) == {"fox", cat, "boat", "waves", "chair", "hello"}
    assert {r["status"] for r in records} == {"done"} and all(r["error"] is None for r in records)
    names = {job_id: [Path(p).name for p in r["outputs"]] for job_id, r in done.items()}
    assert names == {"fox": ["fox.png"], cat: [f"{cat}-0.png", f"{cat}-1.png"], "boat": ["boat.mp4"],
                     "waves": ["waves.wav"], "chair": ["chair.glb"], "hello": ["hello.txt"]}
    for record in records:
        for path in record["outputs"]:
            parameters = sidecar(path)["parameters"]
            assert parameters["job_digest"] == record["digest"] and parameters["job_id"] == record["id"]
    with Image.open(out / "fox.png") as image:
        assert image.size == (64, 64)
    import imageio.v3 as iio
    import soundfile
    import trimesh

    assert iio.imread(out / "boat.mp4", index=None).shape[0] == 4
    assert soundfile.info(str(out / "waves.wav")).duration == pytest.approx(0.5, abs=0.01)
    assert len(trimesh.load(out / "chair.glb", force="mesh").faces) > 0
    assert (out / "hello.txt").read_text(encoding="utf-8") == done["hello"]["text"]
    # Each model loaded once, the video's first frame drawn with the tiny-sd the image lines loaded.
    loaded = [model for r in records for model in r["loaded"]]
    assert sorted(loaded) == sorted(ALL_TINY) and done["boat"]["loaded"] == ["tiny-svd"]
    manifest = [json.loads(line) for line in (out / NAME).read_text().splitlines()]
    assert manifest == records

    mtimes = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    again, stderr = batch(str(jobs), "-d", str(out))
    assert [r["status"] for r in again] == ["skipped"] * 6 and not any(r["loaded"] for r in again)
    assert "Loading" not in stderr and by_id(again)["hello"]["text"] == done["hello"]["text"]
    assert {r["id"]: r["outputs"] for r in again} == {r["id"]: r["outputs"] for r in records}
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.name != NAME} == \
        {name: t for name, t in mtimes.items() if name != NAME}

    old = (out / "waves.wav").read_bytes()
    jobs.write_text(jobs.read_text().replace('"id": "waves"', '"id": "waves", "seed": 5'))
    edited, _ = batch(str(jobs), "-d", str(out))
    assert {r["id"]: r["status"] for r in edited} == {**{job_id: "skipped" for job_id in done}, "waves": "done"}
    assert by_id(edited)["waves"]["loaded"] == ["tiny-audio"]
    assert (out / "waves.wav").read_bytes() != old and not list(out.glob("waves-*"))
    assert sidecar(str(out / "waves.wav"))["parameters"]["seed"] == 5


def test_a_failing_line_is_recorded_and_the_rest_still_run(tmp_path):
    jobs = write_jobs(tmp_path / "jobs.jsonl", [
        {"command": "image", "prompt": "a fox", "model": "tiny-sd", "id": "a"},
        {"command": "image", "prompt": "a fox", "model": "tiny-sd", "id": "b", "image": "missing.png"},
        {"command": "image", "prompt": "a fox", "model": "sd-turbo", "id": "c", "vram": 64},
        {"command": "image", "prompt": "an owl", "model": "tiny-sd", "id": "d"},
    ])
    out = tmp_path / "out"
    records, stderr = batch(str(jobs), "-d", str(out), code=1)
    status = {r["id"]: r["status"] for r in records}
    assert status == {"a": "done", "b": "failed", "c": "failed", "d": "done"}
    failed = by_id(records)
    assert "missing.png" in failed["b"]["error"]["message"] and failed["b"]["error"]["type"] == "InputError"
    assert failed["c"]["error"]["type"] == "ModelNotDownloadedError" and failed["c"]["plan"]["model"] == "sd-turbo"
    assert (out / "a.png").is_file() and (out / "d.png").is_file()
    assert "Error: 2 of 4 jobs failed: b, c" in stderr and str(out / NAME) in stderr
    assert "Error: b: --image missing.png" in stderr  # each failure said as it happens

    again, _ = batch(str(jobs), "-d", str(out), "--fail-fast", code=1)
    assert [(r["id"], r["status"]) for r in again] == [("a", "skipped"), ("d", "skipped"), ("b", "failed")]


def test_a_bad_line_stops_everything_before_anything_loads(tmp_path):
    jobs = write_jobs(tmp_path / "jobs.jsonl", [
        {"command": "image", "prompt": "a fox", "model": "tiny-sd"},
        "# the next one is misspelt",
        {"command": "image", "prompt": "an owl", "model": "tiny-sd", "num_inference_stepz": 3},
    ])
    result = run_cli("batch", str(jobs), "-d", str(tmp_path / "out"))
    assert result.returncode == 2 and result.stdout == ""
    assert "Error: " + str(jobs) + " line 3: unknown key 'num_inference_stepz'" in result.stderr
    assert "Loading" not in result.stderr and not (tmp_path / "out").exists()
    sized = write_jobs(tmp_path / "sized.jsonl", [{"command": "image", "prompt": "a", "model": "tiny-sd",
                                                  "width": 65}])
    result = run_cli("batch", str(sized), "-d", str(tmp_path / "out"))
    assert result.returncode == 2 and f"{sized} line 1: --width 65" in result.stderr


def test_models_are_released_least_recently_used_under_a_small_budget(tmp_path, stablekit_home):
    from stablekit import hub
    from stablekit.registry import load_registry

    # Three records with the tiny SD's files and a memory profile of ~1.1 GiB each: two fit a 3 GiB budget.
    built = hub.ensure_local(load_registry().get("tiny-sd"))
    memory = 'memory = { params = { unet = 300, text_encoder = 0.1, vae = 0.1 }, unit = "megapixels", ' \
             'activation_gib = 0.0, decode_gib = 0.0 }'
    (stablekit_home / "catalog.toml").write_text("".join(
        f'[models.{name}]\nextends = "tiny-sd"\n{memory}\n' for name in ("lru-a", "lru-b", "lru-c")))
    for name in ("lru-a", "lru-b", "lru-c"):
        link = stablekit_home / "tiny" / name  # the same built files (the tiny folder is shared by the session)
        if not link.exists():
            link.symlink_to(built.name)
    jobs = write_jobs(tmp_path / "jobs.jsonl", [{"command": "image", "prompt": f"a {name}", "model": f"lru-{name}",
                                                 "id": name} for name in "abc"])
    # A budget with room for one model's weights beside the next one's peak, not two: from the planner's figures.
    (model,) = batch(str(jobs), "-d", str(tmp_path / "out"), "--dry-run", "--vram", "100")[0][:1]
    plan = model["plans"][0]["plan"]
    share = plan["budget_gib"] / 100
    vram = (plan["weights_gib"] * 1.5 + plan["peak_gib"]) / share
    records, stderr = batch(str(jobs), "-d", str(tmp_path / "out"), "--vram", f"{vram:.3f}")
    assert [(r["id"], r["loaded"], r["released"]) for r in records] == [
        ("a", ["lru-a"], []), ("b", ["lru-b"], []), ("c", ["lru-c"], ["lru-a"])]
    assert "released lru-a to make room" in stderr
    roomy, _ = batch(str(jobs), "-d", str(tmp_path / "roomy"), "--vram", f"{vram * 3:.3f}")
    assert [r["released"] for r in roomy] == [[], [], []]


def test_out_of_memory_is_retried_once_with_the_next_stronger_plan(tmp_path, monkeypatch):
    import torch

    from stablekit.engines import image as engine

    real = engine.ImageSession.run

    def run(self, plan, sink, inputs=None):  # no memory for an untiled decode, and none at all for "always"
        if not plan.device_plan.vae_tiling or plan.request.prompt == "always":
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return real(self, plan, sink, inputs)

    monkeypatch.setattr(engine.ImageSession, "run", run)
    lines = "".join(json.dumps({"command": "image", "prompt": prompt, "model": "tiny-sd", "id": job_id}) + "\n"
                    for job_id, prompt in (("b", "always"), ("a", "a fox"), ("c", "a cat")))
    records, stderr = batch("-", "-d", str(tmp_path / "out"), code=1, input=lines)
    b, a, c = records
    assert b["status"] == "failed" and b["error"]["type"] == "OutOfMemory"
    assert "also with VAE tiling" in b["error"]["message"]
    assert a["status"] == "done" and a["plan"]["vae_tiling"] and a["plan"]["retry"].startswith("VAE tiling")
    assert a["loaded"] == ["tiny-sd", "tiny-sd"]  # the first attempt's pipeline, released; the retry's
    assert "a: out of memory; retrying once with VAE tiling" in stderr
    kept = sidecar(a["outputs"][0])["device_plan"]
    assert kept["vae_tiling"] and "retry: VAE tiling" in kept["reasons"]
    assert c["status"] == "done" and c["plan"]["vae_tiling"] and "earlier job" in c["plan"]["retry"]


def test_dry_run_counts_per_model_and_shows_each_plan_without_loading(tmp_path):
    out = tmp_path / "out"
    text = {"command": "text", "prompt": "hi", "model": "tiny-lm", "max_new_tokens": 4, "id": "hi"}
    jobs = write_jobs(tmp_path / "jobs.jsonl", [text])
    batch(str(jobs), "-d", str(out))
    write_jobs(jobs, [text, {"command": "image", "prompt": "a", "model": "tiny-sd", "id": "a"},
                      {"command": "image", "prompt": "b", "model": "tiny-sd", "id": "b", "width": 128},
                      {"command": "image", "prompt": "c", "model": "tiny-sd", "id": "c", "image": "nope.png"}])
    result = run_cli("batch", str(jobs), "-d", str(out), "--dry-run")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "4 jobs: 2 would run, 1 skipped (done), 1 would fail"
    assert "tiny-sd: 2 to run, 0 skipped, 1 would fail" in lines and "tiny-lm: 0 to run, 1 skipped" in lines
    assert "  c: --image nope.png: no such file" in lines
    assert sum(line.startswith("plan ") for line in lines) == 1  # 64x64 and 128x64: one pipeline, one plan
    assert "Loading" not in result.stderr and not list(out.glob("*.png"))
    as_json = run_cli("batch", str(jobs), "-d", str(out), "--dry-run", "--json")
    models = {m["model"]: m for m in map(json.loads, as_json.stdout.splitlines())}
    assert models["tiny-sd"]["run"] == ["a", "b"] and models["tiny-lm"]["skip"] == ["hi"]
    assert models["tiny-sd"]["plans"][0]["plan"]["device"] == "cpu"


def test_a_prompts_file_runs_through_the_same_loop_with_its_own_names_and_seeds(tmp_path, monkeypatch):
    from stablekit.engines import image as engine
    from stablekit.errors import StablekitError

    real = engine.ImageSession.run

    def run(self, plan, sink, inputs=None):
        if plan.request.prompt == "a dog":
            raise StablekitError("the model produced NaN or black images, even decoded in fp32")
        return real(self, plan, sink, inputs)

    monkeypatch.setattr(engine.ImageSession, "run", run)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a cat\na dog\na fox\n")
    result = run_cli("image", "--prompts-file", str(prompts), "-m", "tiny-sd", "--seed", "10",
                     "-d", str(tmp_path / "out"))
    assert result.returncode == 1
    assert [Path(p).name for p in result.stdout.split()] == ["a-cat-10.png", "a-fox-12.png"]
    assert "Error: prompt 2: the model produced NaN" in result.stderr
    assert "Error: 1 of 3 prompts failed: prompt 2" in result.stderr
    assert result.stderr.count("Loading tiny-sd") == 1


def test_from_sidecars_re_renders_a_folder_under_the_same_names(tmp_path):
    """`batch --from-sidecars OLD -d NEW`: every job that made OLD's outputs runs once more, each output under
    its old name with the same pixels and samples; a rerun skips them all."""
    import soundfile as sf

    old, new = tmp_path / "old", tmp_path / "new"
    assert run_cli("image", "a red fox", "-m", "tiny-sd", "-n", "2", "--seed", "5", "-d", str(old)).returncode == 0
    assert run_cli("audio", "rain", "-m", "tiny-audio", "--seed", "3", "-d", str(old), "-o", "rain.wav").returncode == 0
    (old / "notes.json").write_text('{"not": "a sidecar of ours"}')
    records, _ = batch("--from-sidecars", str(old), "-d", str(new))
    assert [r["status"] for r in records] == ["done", "done"]
    originals = sorted(p.name for p in old.iterdir() if p.suffix in (".png", ".wav"))
    assert originals == ["a-red-fox-5.png", "a-red-fox-6.png", "rain.wav"]
    assert sorted(Path(path).name for r in records for path in r["outputs"]) == originals
    for name in originals[:2]:
        assert np.array_equal(np.asarray(Image.open(old / name)), np.asarray(Image.open(new / name)))
        assert sidecar(str(new / name))["parameters"]["seed"] == sidecar(str(old / name))["parameters"]["seed"]
    assert np.array_equal(sf.read(old / "rain.wav")[0], sf.read(new / "rain.wav")[0])
    again, _ = batch("--from-sidecars", str(old), "-d", str(new))
    assert [r["status"] for r in again] == ["skipped", "skipped"]


@pytest.mark.parametrize("args, needle", [
    ((), "give a job FILE or --from-sidecars DIR"),
    (("jobs.jsonl", "--from-sidecars", "."), "not both"),
    (("--from-sidecars", "missing"), "not a folder"),
    (("--from-sidecars", "."), "no stablekit sidecars"),
])
def test_from_sidecars_usage_errors(tmp_path, monkeypatch, args, needle):
    monkeypatch.chdir(tmp_path)
    write_jobs(tmp_path / "jobs.jsonl", [{"command": "image", "prompt": "a fox", "model": "tiny-sd"}])
    result = run_cli("batch", *args)
    assert result.returncode == 2 and needle in result.stderr and "Traceback" not in result.stderr, result.stderr
