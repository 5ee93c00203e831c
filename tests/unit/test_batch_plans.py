"""The batch's pure parts: the stronger plan after running out of memory, the manifest as the resume index,
grouping by model, least-recently-used release, and the progress lines and bar."""

from __future__ import annotations

import io
import json
from types import SimpleNamespace

import pytest

from stablekit.batch import by_model
from stablekit.batch_progress import BatchProgress
from stablekit.batch_run import Planned
from stablekit.console import Console
from stablekit.devices import Hardware
from stablekit.jobs import job_from, with_seed
from stablekit.manifest import Manifest, is_done, record_key
from stablekit.plan_retry import is_out_of_memory, plan_summary, stronger_plan
from stablekit.runner import plan_job
from stablekit.sessions import SessionPool

CPU = Hardware("cpu", "cpu", 16, 14, 16, 14)
GPU = Hardware("cuda", "RTX 4090", 24, 23.4, 64, 60, (8, 9), 1)


def planned(command: str, hardware=CPU, **values):
    return plan_job(with_seed(job_from(command, values)), hardware)


def test_image_plans_get_stronger_in_the_planners_order_until_none_is_left():
    plan = planned("image", GPU, prompt="a fox", model="sdxl")
    assert (plan.device_plan.offload, plan.device_plan.vae_tiling) == ("none", False)
    steps = []
    while (found := stronger_plan(plan)) is not None:
        plan, change = found
        steps.append(change)
    assert steps == ["VAE tiling", "model offload", "group offload", "sequential offload"]
    assert plan.device_plan.attention_slicing and "retry: sequential offload" in plan.device_plan.reasons
    cpu = planned("image", prompt="a fox", model="tiny-sd")
    tiled, change = stronger_plan(cpu)
    assert change == "VAE tiling" and tiled.device_plan.vae_tiling and stronger_plan(tiled) is None


def test_video_decodes_in_smaller_chunks_and_its_first_image_tiles():
    plan = planned("video", GPU, prompt="a boat", model="svd-xt", image_model="sdxl-turbo", decode_chunk_size=4)
    stronger, change = stronger_plan(plan)
    assert change == "VAE tiling and decode chunks of 2 frames"
    assert stronger.device_plan.decode_chunk_size == 2 and stronger.request.decode_chunk_size == 2
    assert stronger.stages[0].device_plan.vae_tiling and stronger.job.id == plan.job.id
    summary = plan_summary(stronger, f"{change}, after running out of memory")
    assert summary["decode_chunk_size"] == 2 and summary["stages"][0]["vae_tiling"]
    assert summary["retry"].startswith("VAE tiling")


def test_text_models_offload_once_on_a_gpu_and_never_on_a_cpu():
    plan = planned("text", GPU, prompt="hi", model="stablelm-2-zephyr-1.6b")
    stronger, change = stronger_plan(plan)
    assert change == "model offload" and stronger_plan(stronger) is None
    assert stronger_plan(planned("text", prompt="hi", model="tiny-lm")) is None


def test_out_of_memory_is_recognised_in_its_forms():
    import torch

    assert is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert is_out_of_memory(MemoryError())
    assert is_out_of_memory(RuntimeError("MPS backend out of memory (MPS allocated: 17 GB)"))
    assert is_out_of_memory(RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate "
                                         "memory: you tried to allocate 8 GB"))
    try:
        try:
            raise torch.OutOfMemoryError("CUDA out of memory")
        except torch.OutOfMemoryError as inner:
            raise ValueError("decoding failed") from inner
    except ValueError as outer:
        assert is_out_of_memory(outer)
    assert not is_out_of_memory(RuntimeError("expected scalar type Float"))


def write_output(tmp_path, name: str, digest: str, job_id: str = "fox") -> str:
    path = tmp_path / name
    path.write_bytes(b"pixels")
    (tmp_path / f"{name}.json").write_text(json.dumps({"parameters": {"job_digest": digest, "job_id": job_id}}))
    return str(path)


def test_the_manifest_is_the_resume_index(tmp_path):
    manifest = Manifest(tmp_path / "m.jsonl")
    out = write_output(tmp_path, "fox.png", "d1")
    done = {"id": "fox", "status": "done", "digest": "d1", "output": "/o/fox", "outputs": [out]}
    manifest.append({**done, "status": "failed", "outputs": []})
    manifest.append(done)
    latest = Manifest(tmp_path / "m.jsonl").latest()["fox"]
    assert latest == done and is_done(latest, "d1", "/o/fox")
    assert not is_done(latest, "d2", "/o/fox")  # the parameters changed
    assert not is_done(latest, "d1", "/o/fox.webp")  # the output name changed
    assert not is_done({**done, "status": "failed"}, "d1", "/o/fox")
    (tmp_path / "fox.png.json").write_text(json.dumps({"parameters": {"job_digest": "other"}}))
    assert not is_done(latest, "d1", "/o/fox")  # the file there is not this job's any more
    (tmp_path / "fox.png").unlink()
    assert not is_done(latest, "d1", "/o/fox")
    job = SimpleNamespace(output="renders/{id}")
    assert record_key(job, tmp_path) == str(tmp_path.resolve() / "renders/{id}")


def test_a_line_cut_short_by_a_killed_run_is_dropped_before_the_next_record(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"id": "a", "status": "done", "outputs": []}\n{"id": "b", "sta')
    manifest = Manifest(path)
    assert [r["id"] for r in manifest.records] == ["a"]
    manifest.append({"id": "c", "status": "failed", "outputs": []})
    lines = path.read_text().splitlines()
    assert [json.loads(line)["id"] for line in lines] == ["a", "c"]


def test_jobs_group_by_model_and_a_stage_follows_the_model_it_shares():
    items = [Planned(SimpleNamespace(job=job_from("image", {"prompt": p, "model": m})), plan=SimpleNamespace(stages=()))
             for p, m in (("a", "tiny-sd"), ("b", "tiny-sdxl"), ("c", "tiny-sd"))]
    video = planned("video", prompt="a boat", model="tiny-svd", image_model="tiny-sd")
    items.insert(2, Planned(SimpleNamespace(job=video.job), plan=video))
    order = [(item.entry.job.spec.id, item.entry.job.request.prompt) for item in by_model(items)]
    assert order == [("tiny-sd", "a"), ("tiny-sd", "c"), ("tiny-svd", "a boat"), ("tiny-sdxl", "b")]


class FakeEngine:
    def __init__(self) -> None:
        self.loaded: list[str] = []

    @staticmethod
    def session_key(plan):
        return (plan.spec.id,)

    def load(self, plan, progress):
        self.loaded.append(plan.spec.id)
        return SimpleNamespace(close=lambda: None)


def fake_plan(model: str, weights: float, budget: float = 2.5):
    device_plan = SimpleNamespace(device="cuda", budget_gib=budget, weights_gib=weights, peak_gib=weights + 0.1)
    return SimpleNamespace(spec=SimpleNamespace(id=model), device_plan=device_plan)


def test_the_pool_releases_the_least_recently_used_model_when_the_next_would_not_fit():
    engine, pool = FakeEngine(), SessionPool()
    a, b, c = fake_plan("a", 1.0), fake_plan("b", 1.0), fake_plan("c", 1.0)
    for plan in (a, b, a, c):  # b was used less recently than a
        pool.acquire(plan, engine)
    assert engine.loaded == ["a", "b", "c"] and pool.held() == ["a", "c"]
    roomy = SessionPool()
    for plan in (fake_plan("a", 1.0, 9), fake_plan("b", 1.0, 9), fake_plan("c", 1.0, 9)):
        roomy.acquire(plan, engine)
    assert roomy.held() == ["a", "b", "c"]


def record(status: str, job_id: str, **extra):
    return {"id": job_id, "status": status, "command": "image", "model": "tiny-sd", "seconds": 1.25,
            "outputs": [f"out/{job_id}.png"], "error": None, **extra}


def test_a_log_gets_one_line_per_finished_job_and_a_model_load():
    err = io.StringIO()
    progress = BatchProgress(Console(stderr=err, terminal=False, heartbeat_s=3600))
    with progress.running(3, skipped=1):
        progress.begin("fox")
        progress.stage("Loading tiny-sd (float32 on cpu, offload none)")
        with progress.task("image 1/1", total=2) as advance:
            advance()
            advance()
        progress.stage("Decoding")
        progress.note("input 64x64: the image's size")
        progress.note("Warning: the prompt is 90 tokens")
        progress.finished(record("done", "fox"))
        progress.begin("owl")
        progress.finished(record("failed", "owl", outputs=[], error={"message": "--image owl.png: no such file"}))
    lines = err.getvalue().splitlines()
    assert lines == ["skipping 1 job already done", "fox: Loading tiny-sd (float32 on cpu, offload none)",
                     "fox: Warning: the prompt is 90 tokens",
                     "[2/3] done fox (image tiny-sd, 1.2 s): out/fox.png",
                     "[3/3] failed owl (image tiny-sd, 1.2 s): --image owl.png: no such file"]


def test_a_terminal_gets_one_overall_bar_with_the_jobs_steps_under_it(monkeypatch):
    err = io.StringIO()
    console = Console(stderr=err, terminal=True)
    progress = BatchProgress(console, stream=err, terminal=True)
    with progress.running(4, skipped=1):
        progress.begin("fox")
        with progress.task("image 1/1", total=2) as advance:
            advance()
            progress._bar.refresh()
            screen = err.getvalue()
            assert "batch 1/4" in screen and "0 done · 1 skipped" in screen and "failed" not in screen
            assert "fox: image 1/1" in screen and "1/2" in screen
            advance()
        progress.finished(record("done", "fox"))
        progress._bar.refresh()
        progress.begin("owl")
        progress.finished(record("failed", "owl", outputs=[], error={"message": "no such file"}))
        progress._bar.refresh()
        assert "1 done · 1 skipped · 1 failed" in err.getvalue() and "/min · ETA" in err.getvalue()
    assert progress.rate()[0] > 0


@pytest.mark.parametrize("seconds, text", [(59, "0:59"), (61, "1:01"), (3725, "1:02:05")])
def test_eta_reads_as_a_clock(seconds, text):
    from stablekit.batch_progress import _clock

    assert _clock(seconds) == text
