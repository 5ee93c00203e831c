"""The in-process runner (conftest.run_cli) answers as a real process does, and leaves nothing behind."""

from __future__ import annotations

import os
import sys

import pytest

from conftest import run_cli, run_process


@pytest.mark.parametrize("args", [["--version"], ["models", "info", "nope"], ["image", "cat", "--bogus"],
                                  ["presets", "show", "draft"], ["models", "list", "--modality", "video"]])
def test_in_process_runs_match_real_ones(args):
    here, there = run_cli(*args), run_process(*args)
    assert (here.returncode, here.stdout, here.stderr) == (there.returncode, there.stdout, there.stderr)


def test_a_run_leaves_environment_folder_and_streams_as_they_were(tmp_path):
    before = dict(os.environ), os.getcwd(), (sys.stdin, sys.stdout, sys.stderr), sys.excepthook
    (tmp_path / "elsewhere").mkdir()
    result = run_cli("text", "-", "--model", "nope", env={"STABLEKIT_TEST_ONLY": "1"}, cwd=tmp_path / "elsewhere",
                     input="hello\n")
    assert result.returncode == 2 and "unknown model 'nope'" in result.stderr
    assert (dict(os.environ), os.getcwd(), (sys.stdin, sys.stdout, sys.stderr), sys.excepthook) == before
