"""`stablekit batch` stopped in a real process (Ctrl-C, SIGTERM, SIGKILL): finished outputs kept, the manifest
valid, and a rerun that finishes the rest with every output valid and no temporary file left."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from conftest import run_cli
from stablekit.manifest import NAME

IDS = [f"j{i}" for i in range(6)]


def write_jobs(tmp_path: Path) -> Path:
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text("".join(json.dumps({"command": "image", "prompt": f"picture {job_id}", "model": "tiny-sd",
                                        "id": job_id}) + "\n" for job_id in IDS))
    return jobs


def start(jobs: Path, out: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "stablekit", "batch", str(jobs), "-d", str(out), "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ)


def manifest(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / NAME).read_text().splitlines()]  # every line whole


def temporary(out: Path) -> list[Path]:
    return [path for path in out.iterdir() if ".partial" in path.name]


def assert_complete(jobs: Path, out: Path, finished: set[str], keep: tuple[Path, ...] = ()) -> str:
    """A rerun skips what finished, renders the rest, and leaves every output whole with its sidecar (and no
    temporary file but those in `keep`); returns its stderr."""
    rerun = run_cli("batch", str(jobs), "-d", str(out), "--json")
    assert rerun.returncode == 0, rerun.stderr
    status = {r["id"]: r["status"] for r in map(json.loads, rerun.stdout.splitlines())}
    assert status == {job_id: "skipped" if job_id in finished else "done" for job_id in IDS}
    for job_id in IDS:
        with Image.open(out / f"{job_id}.png") as image:
            image.load()
            assert image.size == (64, 64)
        assert json.loads((out / f"{job_id}.png.json").read_text())["parameters"]["id"] == job_id
    assert sorted(temporary(out)) == sorted(keep)
    assert manifest(out)[-len(IDS):] == [json.loads(line) for line in rerun.stdout.splitlines()]
    return rerun.stderr


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_an_interrupt_keeps_what_finished_and_a_rerun_finishes_the_rest(tmp_path, signum, code):
    jobs, out = write_jobs(tmp_path), tmp_path / "out"
    process = start(jobs, out)
    first = json.loads(process.stdout.readline())  # one job is done and recorded: now stop the batch
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == code, stderr
    assert "Traceback" not in stderr and "run the same command again to continue" in stderr
    records = manifest(out)
    assert records[0] == first and {r["status"] for r in records} <= {"done", "interrupted"}
    finished = {r["id"] for r in records if r["status"] == "done"}
    assert 1 <= len(finished) < len(IDS) and not temporary(out)
    for job_id in finished:
        with Image.open(out / f"{job_id}.png") as image:
            image.load()
    assert_complete(jobs, out, finished)


def test_after_sigkill_a_rerun_finishes_and_removes_the_temporary_files_left(tmp_path):
    jobs, out = write_jobs(tmp_path), tmp_path / "out"
    process = start(jobs, out)
    process.stdout.readline()
    process.kill()
    process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL
    # What a kill in the middle of writing leaves: a temporary output of the dead process and half a record;
    # a temporary file of a process still running is not ours to remove.
    dead = out / f".j5.{process.pid}.k1ll3d.partial.png"
    dead.write_bytes(b"\x89PNG half")
    alive = out / f".j5.{os.getpid()}.st1ll0n.partial.png"
    alive.write_bytes(b"\x89PNG half")
    with (out / NAME).open("a") as file:
        file.write('{"id": "j5", "status": "do')
    finished = {r["id"] for r in manifest_lines(out) if r["status"] == "done"}
    stderr = assert_complete(jobs, out, finished, keep=(alive,))
    assert not dead.exists() and "left by a killed run" in stderr
    # Now every job is done: a rerun skips them all without loading a model, or even importing torch.
    again = subprocess.run([sys.executable, "-X", "importtime", "-m", "stablekit", "batch", str(jobs), "-d", str(out),
                            "--json"], capture_output=True, text=True, env=os.environ, timeout=300)
    assert again.returncode == 0, again.stderr
    assert {json.loads(line)["status"] for line in again.stdout.splitlines()} == {"skipped"}
    imported = set(re.findall(r"^import time:\s+\d+ \|\s+\d+ \|\s+(\S+)", again.stderr, flags=re.M))
    assert "torch" not in imported and "diffusers" not in imported


def manifest_lines(out: Path) -> list[dict]:
    """The records whole so far (the last line may be cut)."""
    records = []
    for line in (out / NAME).read_text().splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            pass
    return records
