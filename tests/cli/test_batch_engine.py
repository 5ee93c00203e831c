"""`batch --engine`: Ray stays out of every other path, and a missing Ray says how to install it."""

from __future__ import annotations

import json
import sys

import pytest

from conftest import import_trace, run_cli, top_level


@pytest.mark.parametrize("args", [["--help"], ["batch", "--help"]])
def test_help_imports_no_ray(args):
    result, modules = import_trace(*args)
    assert result.returncode == 0, result.stderr
    modules = top_level(modules)
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
