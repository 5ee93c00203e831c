"""Progress that tells the truth: counters never pass their totals, decoding is a stage of its own, and piped
output keeps printing through a long stage."""

from __future__ import annotations

import io
import re
import time

import pytest

from stablekit.console import Console, Progress, Steps
from stablekit.errors import UsageError

COUNTS = re.compile(r"(\d+)/(\d+)")


def counts(text: str) -> list[tuple[int, int]]:
    return [(int(a), int(b)) for a, b in COUNTS.findall(text)]


def test_steps_never_count_past_the_total():
    steps = Steps(3)
    for _ in range(5):  # PNDM calls back once more than the steps asked for
        steps()
    assert (steps.done, steps.total) == (3, 3)
    steps(total=5)  # a step, from an engine that learns the real total: advance(total=pipe.num_timesteps)
    assert (steps.done, steps.total) == (4, 5)
    steps(0, total=2)  # a total below what is already done is not believed
    assert (steps.done, steps.total) == (4, 4)


def test_then_stage_starts_once_when_the_last_step_is_counted():
    stages = []

    class Recorder(Progress):
        def stage(self, description):
            stages.append(description)

    with Recorder().task("image 1/1", total=2, then="Decoding") as advance:
        advance()
        assert stages == []
        advance()
        advance()
    assert stages == ["Decoding"]


def test_piped_counter_lines_never_pass_the_total():
    err = io.StringIO()
    console = Console(stderr=err, heartbeat_s=0)  # a line for every step
    with console.task("image 1/1", total=3, then="Decoding") as advance:
        for _ in range(4):
            advance()
    lines = err.getvalue().splitlines()
    assert lines[0] == "image 1/1 (3 steps)"
    assert [c for c in counts(err.getvalue()) if c[0] != 1 or c[1] != 1][:3] == [(1, 3), (2, 3), (3, 3)]
    assert all(done <= total for done, total in counts(err.getvalue()))
    assert "Decoding" in lines and lines.index("Decoding") > lines.index("image 1/1: 3/3 (0 s)")


def test_terminal_bar_never_shows_more_than_its_total():
    err = io.StringIO()
    console = Console(stderr=err, terminal=True)
    assert console.animated
    with console.task("image 1/1", total=3, then="Decoding") as advance:
        for _ in range(5):
            advance()
            console._bar.refresh()
        time.sleep(0.05)
        console._bar.refresh()
        screen = err.getvalue()
    shown = [c for c in counts(screen) if c != (1, 1)]
    assert (3, 3) in shown and all(done <= total for done, total in shown)
    assert "Decoding" in screen  # a row of its own, under the finished bar


def test_decoding_is_its_own_stage_in_plain_output():
    err = io.StringIO()
    console = Console(stderr=err, heartbeat_s=60)
    console.stage("Loading tiny-sd")
    with console.task("image 1/1", total=2) as advance:
        advance()
        advance()
        console.stage("Decoding")
    assert err.getvalue().splitlines() == ["Loading tiny-sd", "image 1/1 (2 steps)", "Decoding"]


def test_piped_long_stages_print_a_line_every_few_seconds():
    err = io.StringIO()
    console = Console(stderr=err, heartbeat_s=0.2)
    console.stage("Loading sd-3.5-large")
    time.sleep(0.9)
    with console.task("image 1/1", total=4) as advance:
        advance()
        time.sleep(0.9)  # one slow step
    console.result("out.png")
    before = err.getvalue()
    time.sleep(0.5)
    lines = before.splitlines()
    assert sum(line.startswith("Loading sd-3.5-large ...") for line in lines) >= 2
    assert sum(line.startswith("image 1/1: 1/4") for line in lines) >= 2
    assert err.getvalue() == before, "nothing more once the result is out"


def test_quiet_prints_no_progress_but_still_counts():
    err = io.StringIO()
    console = Console(stderr=err, quiet=True, heartbeat_s=0)
    console.stage("Loading")
    with console.task("image", total=2, then="Decoding") as advance:
        for _ in range(3):
            advance()
    assert (advance.done, advance.total) == (2, 2) and err.getvalue() == ""


def test_a_bad_progress_setting_is_named(monkeypatch):
    monkeypatch.setenv("STABLEKIT_PROGRESS_SECONDS", "soon")
    console = Console(stderr=io.StringIO())
    console.error("still printable")
    with pytest.raises(UsageError, match="STABLEKIT_PROGRESS_SECONDS"):
        console.stage("Loading")
