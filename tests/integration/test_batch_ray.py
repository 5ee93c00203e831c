"""`stablekit batch --engine ray` on a local Ray instance bound to 127.0.0.1, with the tiny models.

One instance serves the module (start-up is seconds here, and much more on a busy machine); each batch run in
this process uses it as it is and ends its own workers. The SIGKILL test's driver is a real process with a
private instance of its own, whose leftovers the test ends by pid. Every test is bounded by an alarm.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import run_cli
from stablekit.manifest import NAME

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.distributed

LIMIT_S = 900  # per test; a loaded 2-core machine takes minutes to start Ray and load five tiny models


class TookTooLong(Exception):
    pass


@pytest.fixture(scope="module")
def ray_instance():
    from stablekit.ray_cluster import connect

    with connect(None, num_cpus=4) as cluster:
        assert cluster.private and ray.nodes()[0]["NodeManagerAddress"] == "127.0.0.1"
        assert ray.get_runtime_context().gcs_address.startswith("127.0.0.1:")
        yield cluster
    assert not ray.is_initialized()


@pytest.fixture(autouse=True)
def bounded(ray_instance):
    def expire(signum, frame):
        raise TookTooLong(f"over {LIMIT_S} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(LIMIT_S)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


@pytest.fixture
def picture(tmp_path) -> Path:
    pixels = np.zeros((60, 80, 4), np.uint8)
    pixels[10:50, 20:60] = [200, 30, 30, 255]
    pixels[20:40, 30:70] = [20, 200, 40, 255]
    path = tmp_path / "inputs" / "chair.png"
    path.parent.mkdir()
    Image.fromarray(pixels).save(path)
    return path


def write_jobs(path: Path, lines: list[dict]) -> Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def batch(*args: str, code: int = 0) -> tuple[list[dict], str]:
    result = run_cli("batch", *args, "--json")
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()], result.stderr


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != NAME and not p.name.endswith(".json")}


def parameters(folder: Path) -> dict[str, dict]:
    return {p.name: json.loads(p.read_text())["parameters"] for p in folder.glob("*.json") if p.name != NAME}


def assert_valid_pngs(out: Path, ids: list[str]) -> None:
    for job_id in ids:
        with Image.open(out / f"{job_id}.png") as image:
            image.load()
            assert image.size == (64, 64)
        assert json.loads((out / f"{job_id}.png.json").read_text())["parameters"]["job_id"] == job_id
    assert not [p for p in out.iterdir() if ".partial" in p.name]


def test_two_workers_render_a_mixed_file_byte_identical_to_the_local_engine(tmp_path, picture):
    jobs = write_jobs(tmp_path / "jobs.jsonl", [
        {"command": "image", "prompt": "a fox", "model": "tiny-sd", "id": "fox"},
        {"command": "image", "prompt": "a cat", "model": "tiny-sd", "num_images": 2, "id": "cat"},
        {"command": "image", "prompt": "a red chair", "model": "tiny-sd", "image": str(picture), "id": "redo"},
        {"command": "video", "prompt": "a boat", "model": "tiny-svd", "image_model": "tiny-sd", "id": "boat"},
        {"command": "audio", "prompt": "waves", "model": "tiny-audio", "id": "waves"},
        {"command": "mesh", "image": str(picture), "model": "tiny-triposr", "id": "chair"},
        {"command": "text", "prompt": "hello", "model": "tiny-lm", "max_new_tokens": 8, "id": "hello"},
        # Two that fail: one on a worker (its model is not downloaded), one here (its input is missing).
        {"command": "image", "prompt": "a fox", "model": "sd-turbo", "id": "absent", "vram": 64},
        {"command": "image", "prompt": "a fox", "model": "tiny-sd", "id": "no-input", "image": "missing.png"},
    ])
    local, _ = batch(str(jobs), "-d", str(tmp_path / "local"), code=1)
    remote, stderr = batch(str(jobs), "-d", str(tmp_path / "ray"), "--engine", "ray", "--workers", "2", code=1)
    assert {r["id"]: r["status"] for r in remote} == {r["id"]: r["status"] for r in local}
    assert {r["id"] for r in remote if r["status"] == "failed"} == {"absent", "no-input"}
    assert "Error: 2 of 9 jobs failed: " in stderr and "restarted" not in stderr
    failed = {r["id"]: r for r in remote if r["status"] == "failed"}
    assert failed["absent"]["error"]["type"] == "ModelNotDownloadedError" and "worker" in failed["absent"]
    assert failed["no-input"]["error"]["type"] == "InputError" and "worker" not in failed["no-input"]  # never sent
    remote = [r for r in remote if r["status"] == "done"]
    assert {r["worker"]["index"] for r in remote} == {1, 2} and "ray: 2 workers on this process's Ray" in stderr
    made_local, made_ray = files(tmp_path / "local"), files(tmp_path / "ray")
    assert set(made_ray) == {"fox.png", "cat-0.png", "cat-1.png", "redo.png", "boat.mp4", "waves.wav", "chair.glb",
                             "hello.txt"}
    assert made_ray == made_local  # byte for byte, the shipped init image included
    assert parameters(tmp_path / "ray") == parameters(tmp_path / "local")
    assert parameters(tmp_path / "ray")["redo.png.json"]["image"] == str(picture)  # the path the file gave
    local_text = next(r["text"] for r in local if r["id"] == "hello")
    assert next(r["text"] for r in remote if r["id"] == "hello") == local_text
    manifest = [json.loads(line) for line in (tmp_path / "ray" / NAME).read_text().splitlines()]
    assert [r for r in manifest if r["status"] == "done"] == remote and len(manifest) == 9  # each failure once
    assert all(r["output"].startswith(str(tmp_path / "ray")) for r in manifest)


def test_a_worker_killed_mid_batch_is_restarted_and_the_batch_completes(tmp_path):
    from stablekit.batch import run_batch
    from stablekit.batch_file import load_entries
    from stablekit.batch_progress import BatchProgress
    from stablekit.console import Console
    from stablekit.distributed import RayDriver, RayOptions
    from stablekit.manifest import Manifest

    ids = [f"k{i}" for i in range(6)]
    jobs = write_jobs(tmp_path / "jobs.jsonl", [{"command": "image", "prompt": f"picture {job_id}",
                                                 "model": "tiny-sd", "id": job_id} for job_id in ids])
    out = tmp_path / "out"
    drivers: list[RayDriver] = []
    killed: list[int] = []
    options = RayOptions(workers=2)

    def driver(*args, **kwargs) -> RayDriver:
        drivers.append(RayDriver(*args, options=options, **kwargs))
        return drivers[-1]

    def on_record(record: dict) -> None:  # after the first job: kill a worker that is running one
        busy = [worker for worker in drivers[0].workers if worker.item is not None]
        if not killed and busy:
            killed.append(busy[0].pid)
            os.kill(busy[0].pid, signal.SIGKILL)

    stderr = tmp_path / "stderr.txt"
    with stderr.open("w") as err:
        outcome = run_batch(load_entries(str(jobs), sys.stdin), output_dir=out, manifest=Manifest(out / NAME),
                            progress=BatchProgress(Console(stderr=err, terminal=False)), on_record=on_record,
                            driver=driver)
    assert killed, "no worker was busy when the first job ended"
    assert sorted(r["id"] for r in outcome.records) == ids and {r["status"] for r in outcome.records} == {"done"}
    assert "was restarted (pid " + str(killed[0]) in stderr.read_text()
    assert_valid_pngs(out, ids)


def test_after_sigkill_of_the_driver_a_rerun_finishes_only_the_missing_jobs(tmp_path):
    import psutil

    ids = [f"j{i}" for i in range(6)]
    jobs = write_jobs(tmp_path / "jobs.jsonl", [{"command": "image", "prompt": f"picture {job_id}",
                                                 "model": "tiny-sd", "id": job_id} for job_id in ids])
    out = tmp_path / "out"
    process = subprocess.Popen([sys.executable, "-m", "stablekit", "batch", str(jobs), "-d", str(out), "--json",
                                "--engine", "ray", "--workers", "1"],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        first = json.loads(process.stdout.readline())  # one job is written and recorded: kill the driver now
        ray_processes = psutil.Process(process.pid).children(recursive=True)
        process.kill()
        process.wait(timeout=60)
    finally:
        process.kill()
        process.stdout.close()
    gone, alive = psutil.wait_procs(ray_processes, timeout=20)
    for leftover in alive:  # Ray's agents of the dead driver's instance can outlive it: end them
        leftover.kill()
    psutil.wait_procs(alive, timeout=10)
    for folder in Path(tempfile.gettempdir()).glob(f"stablekit-ray-{process.pid}-*"):  # the dead instance's files
        shutil.rmtree(folder, ignore_errors=True)
    finished = set()
    for line in (out / NAME).read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a line cut by the kill
        finished.add(record["id"])
    assert first["id"] in finished and len(finished) < len(ids)
    rerun, _ = batch(str(jobs), "-d", str(out), "--engine", "ray", "--workers", "1")
    assert {r["id"]: r["status"] for r in rerun} == {job_id: "skipped" if job_id in finished else "done"
                                                     for job_id in ids}
    assert_valid_pngs(out, ids)
