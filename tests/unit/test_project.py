"""The project's own promises: CI runs what the README says, generated files are fresh, lint is clean."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT


def readme_block(after: str) -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = text.split(after, 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.strip()]


def makefile_recipe(target: str) -> list[str]:
    """The recipe lines of a Makefile target, with its variables as they are written."""
    text = (ROOT / "Makefile").read_text()
    body = text.split(f"\n{target}:", 1)[1].split("\n\n", 1)[0]
    return [line.strip() for line in body.splitlines()[1:] if line.startswith("\t")]


def test_readme_makefile_and_ci_agree():
    """README "Install" = the Makefile's set-up = what .ci/run does; one test command in all three."""
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    setup = readme_block("## Install")
    assert setup[0].startswith("python3 -m venv") and setup[1].startswith(". ")
    for line in setup[2:]:
        assert line in ci, f"README set-up step missing from .ci/run: {line}"
    assert ci.index("pip install torch==2.13.0") < ci.index("pip install -e '.[dev]'")
    # The Makefile's set-up runs the same pip steps in $(VENV), torch first.
    makefile = (ROOT / "Makefile").read_text()
    assert "\nTORCH ?= torch==2.13.0\n" in makefile and "\nVENV ?= .venv\n" in makefile
    install = makefile_recipe("$(STAMP)")
    pips = [line for line in install if "pip install" in line and "--upgrade pip" not in line]
    assert pips == ["$(BIN)/pip install $(TORCH) $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))",
                    "$(BIN)/pip install -e '.[dev]'"]
    assert any("-m venv $(VENV)" in line for line in install)
    # One test command: the README's, run by `make test`, which is what CI calls after the README's set-up.
    test_command = readme_block("## Run the tests")
    assert test_command == ["python -m pytest"]
    assert makefile_recipe("test") == ["$(BIN)/python -m pytest"]
    assert ci[-1] == 'make test VENV="$venv"'
    assert "test_project.py::test_readme_makefile_and_ci_agree" in (ROOT / ".ci" / "run").read_text()


@pytest.mark.parametrize("signal_name", ["SIGTERM", "SIGINT"])
def test_ci_run_removes_its_environment_when_killed(tmp_path, signal_name):
    """A CI runner that stops .ci/run (timeout, cancel) kills its process group: the 2 GB scratch venv still goes.

    The real set-up steps are stubbed (python3 makes an empty venv, pip and python succeed, make waits), so only
    the script's own clean-up runs.
    """
    import signal
    import time

    stubs = tmp_path / "stubs"
    stubs.mkdir()
    scratch_root = tmp_path / "tmp"
    scratch_root.mkdir()
    started = tmp_path / "make-started"
    scripts = {
        "python3": 'if [ "$1" = -m ] && [ "$2" = venv ]; then mkdir -p "$3/bin" && : > "$3/bin/activate"; fi',
        "pip": "exit 0",
        "python": "exit 0",
        "make": f': > "{started}"; exec sleep 60',
    }
    for name, body in scripts.items():
        (stubs / name).write_text(f"#!/bin/sh\n{body}\n")
        (stubs / name).chmod(0o755)
    env = {**os.environ, "PATH": f"{stubs}{os.pathsep}{os.environ['PATH']}", "TMPDIR": str(scratch_root)}
    process = subprocess.Popen(["bash", str(ROOT / ".ci" / "run")], env=env, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while not started.exists():
        assert process.poll() is None, process.stderr.read()
        assert time.monotonic() < deadline, "the stubbed make never started"
        time.sleep(0.05)
    assert len(list(scratch_root.iterdir())) == 1  # the scratch folder with its venv
    os.killpg(process.pid, getattr(signal, signal_name))
    process.wait(30)
    process.stderr.close()
    assert process.returncode == {"SIGTERM": 143, "SIGINT": 130}[signal_name]
    assert list(scratch_root.iterdir()) == []


def test_quick_start_is_two_make_commands_and_demo_renders_the_readme_example():
    assert readme_block("## Quick start") == ["make demo", "make test"]
    tiny_example = readme_block("The tiny random-weight")[0]
    demo = " ".join(makefile_recipe("demo"))
    assert f"HF_HUB_OFFLINE=1 $(BIN)/{tiny_example} " in demo  # offline, exactly the README's example
    assert 'stablekit image \\"a lighthouse at dusk\\"' in demo  # and how to run the real default model
    makefile = (ROOT / "Makefile").read_text()
    assert "\ndemo: setup\n" in makefile and "\ntest: setup\n" in makefile


def test_makefile_sets_up_only_when_needed(tmp_path):
    """`make -n` with a set-up venv plans no pip run; without one it plans the venv and the installs."""
    make = shutil.which("make")
    if make is None:
        pytest.skip("make is not installed")
    venv = tmp_path / "venv"
    # Run as a top-level make even when the suite itself runs under `make test` (as CI does): a sub-make prints
    # "Entering directory" lines.
    env = {k: v for k, v in os.environ.items() if k not in ("MAKELEVEL", "MAKEFLAGS", "MFLAGS")}
    fresh = subprocess.run([make, "-n", "test", f"VENV={venv}"], cwd=ROOT, capture_output=True, text=True, env=env)
    assert fresh.returncode == 0, fresh.stderr
    assert f"{venv}/bin/pip install torch==2.13.0" in fresh.stdout and f"{venv}/bin/python -m pytest" in fresh.stdout
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").write_text("")
    (venv / ".stablekit-installed").write_text("")
    ready = subprocess.run([make, "-n", "test", f"VENV={venv}"], cwd=ROOT, capture_output=True, text=True, env=env)
    assert ready.returncode == 0, ready.stderr
    assert "pip install" not in ready.stdout and ready.stdout.strip() == f"{venv}/bin/python -m pytest"


def test_readme_first_commands_are_the_main_job():
    lines = readme_block("## Make an image")
    assert lines == ['stablekit image "a lighthouse at dusk"']
    assert readme_block("The tiny random-weight") == ['stablekit image "a lighthouse at dusk" --model tiny-sd']


@pytest.mark.parametrize("script", ["generate_completions.py", "generate_model_table.py", "generate_flag_table.py"])
def test_generated_files_are_fresh(script):
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / script), "--check"], capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr


def test_ruff_is_clean():
    ruff = shutil.which("ruff") or shutil.which("ruff", path=str(ROOT / ".venv" / "bin"))
    if ruff is None:
        pytest.skip("ruff is not installed (pip install -e '.[dev]')")
    result = subprocess.run([ruff, "check", "."], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_no_heavy_imports_at_module_level_outside_engines_and_writers():
    """The same rule ruff's TID253 enforces, checked without ruff too."""
    heavy = re.compile(r"^(import|from) (torch|diffusers|transformers|accelerate|numpy|PIL|imageio|soundfile|"
                       r"trimesh|peft|huggingface_hub)\b", re.M)
    for path in [*ROOT.joinpath("stablekit").glob("*.py"), *ROOT.joinpath("commands").glob("*.py")]:
        if path.name == "tiny.py":
            continue
        assert not heavy.search(path.read_text()), path
