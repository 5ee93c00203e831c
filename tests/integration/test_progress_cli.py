"""A real run's piped progress: PNDM calls back once more than the steps asked for, and the counter still never
passes its total."""

from __future__ import annotations

import re

from conftest import run_cli


def test_piped_step_counter_never_passes_its_total(tmp_path):
    result = run_cli("image", "a cat", "-m", "tiny-sd", "--steps", "3", "--seed", "1", "-d", str(tmp_path),
                     env={"STABLEKIT_PROGRESS_SECONDS": "0"})  # a line for every step
    assert result.returncode == 0, result.stderr
    counted = [(int(a), int(b)) for a, b in re.findall(r"^image 1/1: (\d+)/(\d+) \(", result.stderr, re.M)]
    assert counted, result.stderr
    assert all(done <= total for done, total in counted), result.stderr
    assert counted[-1][0] == counted[-1][1]
