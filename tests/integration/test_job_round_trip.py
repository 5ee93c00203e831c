"""One job shape for every modality: flags -> job -> JSON -> job gives the same output bytes as the flags."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from conftest import run_cli


def _input_image(folder: Path, mode: str) -> str:
    path = folder / f"input-{mode}.png"
    image = Image.new(mode, (48, 40), (0, 0, 0, 0) if mode == "RGBA" else (200, 120, 40))  # RGBA: see-through
    image.paste((30, 60, 220) + ((255,) if mode == "RGBA" else ()), (12, 8, 36, 32))
    image.save(path)
    return str(path)


FLAGS = {
    "image": lambda d: ["image", "a lighthouse", "-m", "tiny-sd", "--seed", "3", "-n", "2"],
    "video": lambda d: ["video", "--image", _input_image(d, "RGB"), "-m", "tiny-svd", "--seed", "3", "--frames", "3"],
    "audio": lambda d: ["audio", "rain on a roof", "-m", "tiny-audio", "--seed", "3", "--seconds", "0.5"],
    "text": lambda d: ["text", "Once upon a time", "-m", "tiny-lm", "--seed", "3", "--max-tokens", "6"],
    "mesh": lambda d: ["mesh", "--image", _input_image(d, "RGBA"), "-m", "tiny-triposr", "--resolution", "32"],
}


def _job_of(args: list[str]) -> dict:
    """The job the flags mean, as --dry-run --json prints it (the last plan is the job's own)."""
    result = run_cli(*args, "--dry-run", "--json")
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()][-1]["job"]


@pytest.mark.parametrize("command", sorted(FLAGS))
def test_a_job_round_trips_through_json_to_the_same_bytes(command, tmp_path):
    from stablekit import runner
    from stablekit.jobs import job_from
    from stablekit.sink import Sink

    args = FLAGS[command](tmp_path)
    line = json.dumps(_job_of(args))  # what a batch file line or a sidecar holds
    data = json.loads(line)
    assert data["command"] == command and data["seed"] in (3, None)
    job = job_from(data["command"], data, where="the test's line")
    assert json.loads(json.dumps(job.to_dict())) == data, "job -> JSON -> job is the identity"

    from_json = runner.run([job], Sink(tmp_path / "from-json"))
    by_flags = run_cli(*args, "--json", *([] if command == "text" else ["-d", str(tmp_path / "by-flags")]))
    assert by_flags.returncode == 0, by_flags.stderr
    records = [json.loads(line) for line in by_flags.stdout.splitlines()]
    for record in records:  # every command's --json record has the same core keys
        assert {"path", "sidecar", "kind", "model", "seed", "index", "prompt"} <= set(record), record
    if command == "text":
        written = Path(from_json[0]["path"]).read_text(encoding="utf-8")
        assert written == records[0]["text"] and written
        return
    assert len(from_json) == len(records) >= 1
    for a, b in zip(from_json, records, strict=True):
        assert Path(a["path"]).name == Path(b["path"]).name
        assert Path(a["path"]).read_bytes() == Path(b["path"]).read_bytes(), f"{command}: the same bytes"
        sidecar = json.loads(Path(a["sidecar"]).read_text())
        assert sidecar["parameters"]["command"] == command
