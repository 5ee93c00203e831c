"""`batch --engine`: Ray stays out of every other path, and a missing Ray says how to install it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from conftest import run_cli


def imported_modules(*args: str) -> set[str]:
    """Top-level modules a fresh `stablekit ARGS` imports (from python -X importtime)."""
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "stablekit", *args], capture_output=True,
                            text=True, env=os.environ)
    assert result.returncode == 0, result.stderr
    return {name.split(".")[0] for name in re.findall(r"^import time:\s+\d+ \|\s+\d+ \|\s+(\S+)", result.stderr,
                                                      flags=re.M)}


@pytest.mark.parametrize("args", [["--help"], ["batch", "--help"]])
def test_help_imports_no_ray(args):
    modules = imported_modules(*args)
    assert "stablekit" in modules and "ray" not in modules


def test_engine_ray_without_ray_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` meets where it is not installed
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text(json.dumps({"command": "image", "prompt": "a fox", "model": "tiny-sd"}) + "\n")
    result = run_cli("batch", str(jobs), "--engine", "ray")
    assert result.returncode == 2 and result.stdout == ""
    assert "Error: --engine ray needs Ray, which is not installed" in result.stderr
    assert "pip install 'stablekit[ray]'" in result.stderr and not (tmp_path / "stablekit-batch.jsonl").exists()


def test_ray_flags_without_the_ray_engine_are_a_usage_error(tmp_path):
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text(json.dumps({"command": "image", "prompt": "a fox", "model": "tiny-sd"}) + "\n")
    result = run_cli("batch", str(jobs), "--workers", "2")
    assert result.returncode == 2 and "--workers is for --engine ray" in result.stderr
