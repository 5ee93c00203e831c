"""The project's own promises: CI runs what the README says, generated files are fresh, lint is clean."""

from __future__ import annotations

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


def test_ci_runs_the_readme_setup_and_test_command():
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    setup = readme_block("## Install")
    assert setup[0].startswith("python3 -m venv") and setup[1].startswith(". ")
    for line in setup[2:]:
        assert line in ci, f"README set-up step missing from .ci/run: {line}"
    test_command = readme_block("## Run the tests")
    assert test_command == ["python -m pytest"] and ci[-1] == test_command[0]
    assert ci.index("pip install torch==2.13.0") < ci.index("pip install -e '.[dev]'")


def test_readme_first_commands_are_the_main_job():
    lines = readme_block("## Make an image")
    assert lines == ['stablekit image "a lighthouse at dusk"']
    assert readme_block("The tiny random-weight") == ['stablekit image "a lighthouse at dusk" --model tiny-sd']


@pytest.mark.parametrize("script", ["generate_completions.py", "generate_model_table.py"])
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
