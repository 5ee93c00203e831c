"""The pieces of `stablekit serve` that need no server: durations, and jobs crossing the wire unchanged."""

from __future__ import annotations

import json

import pytest

from stablekit import client, server, server_start
from stablekit.errors import UsageError
from stablekit.jobs import job_from


@pytest.mark.parametrize(("text", "seconds"), [("10m", 600), ("90s", 90), ("1h30m", 5400), ("0", 0), ("2.5", 2.5),
                                               ("500ms", 0.5), ("1d", 86400)])
def test_durations(text, seconds):
    assert server_start.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "ten", "10x", "-1m", "m"])
def test_bad_durations_say_what_a_duration_looks_like(text):
    with pytest.raises(UsageError, match="not a duration"):
        server_start.parse_duration(text)


@pytest.mark.parametrize(("command", "values"), [
    ("image", {"prompt": "a cat", "model": "tiny-sd", "seed": 3, "num_images": 2, "loras": ["x.safetensors:0.5"],
               "output": "{seed}.png", "id": "j1"}),
    ("video", {"prompt": "a boat", "model": "tiny-svd", "image_model": "tiny-sd", "seed": 5}),
    ("audio", {"prompt": "rain", "model": "tiny-audio", "seed": 1}),
    ("mesh", {"prompt": "", "image": "chair.png", "model": "tiny-triposr"}),
    ("text", {"prompt": "Hello", "model": "tiny-lm", "stop": ["\n"], "temperature": 0.0}),
])
def test_a_job_crosses_the_wire_unchanged(command, values):
    job = job_from(command, values)
    entry = json.loads(json.dumps(client.wire_job(job)))
    assert server._job(entry) == job


def test_no_server_is_looked_for_when_told_not_to(monkeypatch):
    assert client.wanted()
    assert not client.wanted(no_server=True)
    monkeypatch.setenv("STABLEKIT_SERVER", "0")
    assert not client.wanted()


def test_without_a_server_run_answers_none_and_leaves_nothing(stablekit_home):
    assert client.run([job_from("image", {"prompt": "a cat", "model": "tiny-sd"})], client.Progress(),
                      on_result=print) is None
    assert not client.server_dir().exists()
