"""Faults only a real process shows: stdout on /dev/full, a reader that goes away, SIGTERM. Each ends as the error
table says (one `Error:` line, exit 1), silently for a broken pipe (exit 141, as a shell expects of a pipe's
writer), or like Ctrl-C for SIGTERM (exit 143); nothing half-written in any case."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

FULL = Path("/dev/full")
needs_dev_full = pytest.mark.skipif(not FULL.exists(), reason="no /dev/full on this system")


def _start(*args: str, stdout, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "stablekit", *args], stdout=stdout, stderr=subprocess.PIPE,
                            text=True, env=dict(os.environ), cwd=cwd)


def _errors(stderr: str) -> list[str]:
    assert "Traceback" not in stderr and "Exception ignored" not in stderr, stderr
    return [line for line in stderr.splitlines() if line.startswith("Error: ")]


def _whole(folder: Path) -> list[Path]:
    """The outputs in `folder`, every one with its sidecar and no temporary files beside them."""
    names = sorted(p.name for p in folder.iterdir())
    assert not [n for n in names if ".partial" in n], names
    outputs = [folder / n for n in names if not n.endswith(".json")]
    assert all((folder / f"{p.name}.json").is_file() for p in outputs), names
    return outputs


@needs_dev_full
def test_stdout_on_a_full_disk_is_one_error(tmp_path):
    with FULL.open("w") as full:
        process = _start("models", "list", stdout=full, cwd=tmp_path)
        _, stderr = process.communicate(timeout=300)
    assert process.returncode == 1, stderr
    assert _errors(stderr) == ["Error: cannot write the results to stdout: the disk is full"], stderr
    assert "Hint: free some space" in stderr


@needs_dev_full
def test_an_image_whose_path_cannot_be_printed_stays_whole(tmp_path):
    out = tmp_path / "out"
    with FULL.open("w") as full:
        process = _start("image", "x", "-m", "tiny-sd", "--seed", "1", "-d", str(out), stdout=full, cwd=tmp_path)
        _, stderr = process.communicate(timeout=600)
    assert process.returncode == 1, stderr
    assert _errors(stderr) == ["Error: cannot write the results to stdout: the disk is full"], stderr
    assert [p.name for p in _whole(out)] == ["x-1.png"]


def test_a_reader_that_goes_away_ends_the_run_silently(tmp_path):
    """`stablekit models list | head -0`: no traceback, no message, the exit status of a writer whose pipe broke."""
    process = _start("models", "list", stdout=subprocess.PIPE, cwd=tmp_path)
    process.stdout.close()  # before the process writes anything: its first write meets a broken pipe
    stderr = process.stderr.read()
    assert process.wait(timeout=300) == 141, stderr
    assert stderr == ""


def test_sigterm_finishes_the_image_being_written_and_exits_143(tmp_path):
    out = tmp_path / "out"
    process = _start("image", "cat", "-m", "tiny-sd", "-n", "200", "--seed", "1", "-d", str(out),
                     stdout=subprocess.PIPE, cwd=tmp_path)
    first = process.stdout.readline()  # the first image is on disk: now terminate the run
    process.send_signal(signal.SIGTERM)
    rest, stderr = process.communicate(timeout=300)
    assert process.returncode == 143, stderr
    assert "Traceback" not in stderr
    printed = sorted([first.strip(), *rest.split()])
    outputs = _whole(out)
    assert 1 <= len(outputs) < 200 and sorted(map(str, outputs)) == printed
