"""`stablekit audio` end to end on tiny-audio (8 kHz stereo, at most 1 s), through the CLI in-process; the README
command in a real process, whose stderr also shows what libraries print on import."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import ROOT, run_cli, run_process

RATE, CHANNELS = 8000, 2
LIBRARY_NOISE = ("Warning", "warn", "weight_norm", "ta>=t0", "Traceback", "it/s]")


def records_of(result) -> list[dict]:
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def samples(path) -> np.ndarray:
    data, rate = sf.read(path, dtype="float64", always_2d=True)
    assert rate == RATE
    return data


def sidecar_parameters(path) -> dict:
    return json.loads(Path(f"{path}.json").read_text())["parameters"]


def assert_only_stablekit_on_stderr(result) -> None:
    for noise in LIBRARY_NOISE:
        assert noise not in result.stderr, result.stderr


@pytest.mark.parametrize(("extension", "container", "subtype"), [
    ("wav", "WAV", "PCM_16"), ("flac", "FLAC", "PCM_16"), ("ogg", "OGG", "VORBIS")])
def test_formats_read_back_at_the_models_rate_channels_and_length(tmp_path, extension, container, subtype):
    # One step leaves the tiny model's output far beyond full scale: the default rule must bring it back.
    args = ["audio", "a dog barks", "--model", "tiny-audio", "--seconds", "0.37", "--steps", "1", "-n", "2",
            "--seed", "3", "--json", "-o", "{prompt}-{seed}." + extension]
    first = run_cli(*args, "-d", str(tmp_path / "a"))
    records = records_of(first)
    assert_only_stablekit_on_stderr(first)
    assert [r["seed"] for r in records] == [3, 4] and all(r["sample_rate"] == RATE for r in records)
    waves = []
    for record in records:
        path = Path(record["path"])
        assert path.name == f"a-dog-barks-{record['seed']}.{extension}"
        info = sf.info(path)
        assert (info.format, info.subtype, info.samplerate, info.channels) == (container, subtype, RATE, CHANNELS)
        data = samples(path)
        assert data.shape == (round(0.37 * RATE), CHANNELS), "the requested length, to the sample"
        assert np.abs(data).max() <= 1.0 and np.abs(data).max() > 0.5
        with sf.SoundFile(path) as file:
            assert file.title == "a dog barks" and file.software.startswith("stablekit ")
            embedded = json.loads(file.comment)
        assert embedded["seed"] == record["seed"] and embedded["model"] == "tiny-audio"
        params = sidecar_parameters(path)
        assert params["seed"] == record["seed"] and params["frames"] == 2960 and params["sample_rate"] == RATE
        assert params["model_peak_dbfs"] > 0 and params["gain_db"] < -params["model_peak_dbfs"] + 0.01
        waves.append(data)
    assert not np.array_equal(waves[0], waves[1]), "seed + 1 is another waveform"

    again = records_of(run_cli(*args, "-d", str(tmp_path / "b")))
    for before, after in zip(records, again, strict=True):
        assert np.array_equal(samples(before["path"]), samples(after["path"])), "same seed, same samples"
        if extension != "ogg":  # Vorbis streams get a random serial number
            assert Path(before["path"]).read_bytes() == Path(after["path"]).read_bytes()


def test_normalise_by_default_clip_with_no_normalize(tmp_path):
    common = ["audio", "thunder", "--model", "tiny-audio", "--steps", "1", "--seed", "9", "--bit-depth", "32f",
              "-d", str(tmp_path)]
    normalised = run_cli(*common, "-o", "n.wav")
    clipped = run_cli(*common, "-o", "c.wav", "--no-normalize")
    assert normalised.returncode == 0 and clipped.returncode == 0, normalised.stderr + clipped.stderr
    assert "lowered" in normalised.stderr and "clipped" in clipped.stderr
    n, c = samples(tmp_path / "n.wav"), samples(tmp_path / "c.wav")
    assert sf.info(tmp_path / "n.wav").subtype == "FLOAT"
    assert np.abs(n).max() == 1.0 and np.abs(c).max() == 1.0
    inside = np.abs(c) < 1.0  # where clipping left the model's samples alone...
    n_params, c_params = sidecar_parameters(tmp_path / "n.wav"), sidecar_parameters(tmp_path / "c.wav")
    gain = 10 ** (n_params["gain_db"] / 20)
    assert inside.any() and np.allclose(n[inside], c[inside] * gain, rtol=1e-3, atol=1e-6)  # ...one gain for all
    assert c_params["clipped_samples"] == int((~inside).sum()) > 0 and n_params["clipped_samples"] == 0


def test_start_and_preset_with_24_bit_flac_up_to_the_models_maximum(tmp_path):
    preset = tmp_path / "sfx.toml"
    preset.write_text('command = "audio"\nmodel = "tiny-audio"\nnum_inference_steps = 1\naudio_start_in_s = 0.25\n')
    result = run_cli("audio", "waves", "--preset", str(preset), "--seconds", "0.75", "--bit-depth", "24",
                     "--seed", "1", "-o", "clip.flac", "-d", str(tmp_path / "out"), "--json")
    (record,) = records_of(result)
    assert sf.info(record["path"]).subtype == "PCM_24" and samples(record["path"]).shape == (6000, CHANNELS)
    params = sidecar_parameters(record["path"])
    assert (params["audio_start_in_s"], params["audio_end_in_s"], params["num_inference_steps"]) == (0.25, 1.0, 1)


def test_readme_offline_command_draws_prints_and_records_a_seed(tmp_path):
    readme = (ROOT / "README.md").read_text()
    command = next(line for line in readme.splitlines() if line.endswith("--model tiny-audio"))
    argv = shlex.split(command)
    assert argv[:2] == ["stablekit", "audio"]
    result = run_process(*argv[1:], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert_only_stablekit_on_stderr(result)
    written = tmp_path / result.stdout.strip()
    seed = int(re.search(r"seed (\d+) \(drawn", result.stderr).group(1))
    assert written.name == f"a-dog-barks-{seed}.wav" and sidecar_parameters(written)["seed"] == seed
    assert sf.info(written).subtype == "PCM_16" and samples(written).shape == (4000, CHANNELS)  # default 0.5 s
    assert re.search(r"audio 0\.5 s \(2 steps\)", result.stderr)


def one_line_error(result, *needles: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    errors = [i for i, line in enumerate(lines) if line.startswith("Error: ")]
    assert len(errors) == 1 and len(lines) - errors[0] <= 2, result.stderr  # Error, then at most a Hint
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in result.stderr, result.stderr


@pytest.mark.parametrize(("args", "needles"), [
    (["--seconds", "1.5"], ["--seconds 1.5: tiny-audio renders at most 1 s"]),
    (["--seconds", "0"], ["--seconds 0: the length must be more than 0"]),
    (["--seconds", "-0.5"], ["--seconds -0.5: the length must be more than 0"]),
    (["--start", "0.75", "--seconds", "0.5"], ["ends at 1.25 s", "at most 1 s"]),
    (["--start", "-1"], ["--start -1"]),
    (["-o", "x.mp3"], ["'.mp3'", ".wav, .flac, .ogg"]),
    (["-o", "x.flac", "--bit-depth", "32f"], ["--bit-depth 32f", ".wav for 32-bit float"]),
    (["-o", "x.ogg", "--bit-depth", "16"], ["no bit depth"]),
    (["--bit-depth", "8"], ["'8'"]),
    (["--steps", "0"], ["--steps 0"]),
    (["-n", "0"], ["--count 0"]),
    (["--model", "tiny-sd"], ["image model"]),
    (["--model", "stable-audio-open", "--seconds", "48"], ["--seconds 48: stable-audio-open renders at most 47.55 s"]),
])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, args, needles):
    out = tmp_path / "out"
    one_line_error(run_cli("audio", "a dog barks", "--model", "tiny-audio", *args, "-d", str(out)), *needles)
    assert not out.exists()


def test_length_is_checked_against_the_loaded_model_too(tmp_path, stablekit_home):
    # A catalog record that claims more than the weights can render: caught once the model is loaded.
    (stablekit_home / "catalog.toml").write_text(
        '[models.long-tiny-audio]\nextends = "tiny-audio"\nlimits = { max_audio_length_in_s = 5.0 }\n')
    out = tmp_path / "out"
    one_line_error(run_cli("audio", "a dog barks", "--model", "long-tiny-audio", "--seconds", "2", "-d", str(out)),
                   "--seconds 2: long-tiny-audio (as loaded) renders at most 1 s")
    assert not out.exists()


def test_dry_run_plans_the_length_and_count_and_writes_nothing(tmp_path):
    result = run_cli("audio", "rain", "--seconds", "30", "-n", "2", "--dry-run", "--json", "-d", str(tmp_path / "o"),
                     "--vram", "64")  # as on a machine with room, whatever this one has free now
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert plan["model"] == "stable-audio-open" and plan["workload"] == "30 s, batch 2"
    assert (plan["request"]["audio_end_in_s"], plan["request"]["num_waveforms_per_prompt"]) == (30, 2)
    assert not (tmp_path / "o").exists()


def test_help_shows_formats_and_imports_no_ml_library():
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "stablekit", "audio", "--help"],
                            capture_output=True, text=True)
    assert result.returncode == 0 and "--bit-depth" in result.stdout and "--no-normalize" in result.stdout
    imported = {name.split(".")[0] for name in re.findall(r"^import time:\s+\d+ \|\s+\d+ \|\s+(\S+)",
                                                          result.stderr, flags=re.M)}
    assert not imported & {"torch", "diffusers", "transformers", "numpy", "soundfile"}


def test_progress_advances_once_per_denoising_step(tmp_path):
    from contextlib import contextmanager

    from stablekit import runner
    from stablekit.console import Progress
    from stablekit.jobs import job_from
    from stablekit.sink import Sink

    class Recorder(Progress):
        def __init__(self):
            self.tasks: list[tuple[str, int, int]] = []

        @contextmanager
        def task(self, description, total, then=None):
            steps = []
            yield lambda: steps.append(1)
            self.tasks.append((description, total, len(steps)))

    job = job_from("audio", {"prompt": "rain", "model": "tiny-audio", "num_inference_steps": 3, "seed": 0})
    recorder = Recorder()
    written = runner.run([job], Sink(tmp_path), recorder)
    assert recorder.tasks == [("audio 0.5 s", 3, 3)] and len(written) == 1
