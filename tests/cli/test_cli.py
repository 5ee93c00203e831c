"""The CLI as a user meets it: exit codes, one-line errors, fast start, listings, hub failures.

Most runs are in-process (run_cli); real processes (run_process) where the OS's view is the point: exit codes,
the streams of a real pipe, tracebacks, start-up imports."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from conftest import HEAVY, import_trace, run_cli, run_process, top_level
from fakehub import FakeHub


@pytest.mark.parametrize("args", [["--help"], ["image", "--help"], ["models", "list"], ["models", "info", "sdxl"],
                                  ["presets", "list"]])
def test_fast_paths_import_no_ml_library(args):
    modules = top_level(import_trace(*args)[1])
    assert "stablekit" in modules and "typer" in modules
    assert not modules & set(HEAVY), modules & set(HEAVY)


@pytest.mark.parametrize("args", [
    ("image", "a castle", "--model", "sd-turbo"),
    ("video", "--image", "{picture}", "--model", "svd-xt"),
    ("audio", "rain", "--model", "stable-audio-open"),
    ("text", "hi", "--model", "stablelm-2-1.6b"),
    ("mesh", "--image", "{picture}", "--no-remove-bg", "--texture", "512", "--turntable", "{tmp}/spin.mp4",
     "-o", "{tmp}/chair.glb"),
    ("mesh", "a chair", "--no-remove-bg"),
], ids=["image", "video", "audio", "text", "mesh", "mesh-from-prompt"])
def test_a_dry_run_on_a_cpu_build_of_torch_imports_no_ml_library(tmp_path, args):
    """With PyTorch's CPU wheel (the README's install) a plan needs no torch (no GPU can be there to ask about),
    nor the libraries that run or write the job (trimesh: 1.5 s; TripoSR's torch code)."""
    from importlib.metadata import version

    from PIL import Image

    if not version("torch").endswith("+cpu"):
        pytest.skip("torch is not a +cpu build here")
    Image.new("RGB", (64, 64), (128, 128, 128)).save(tmp_path / "chair.png")
    argv = [a.format(picture=tmp_path / "chair.png", tmp=tmp_path) for a in args]
    result, imported = import_trace(*argv, "--dry-run", "--json", "--vram", "200")
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout.splitlines()[-1])["plan"]["device"] == "cpu"
    assert not top_level(imported) & {"torch", "diffusers", "transformers", "accelerate", "trimesh"}


def test_completion_offers_model_ids_without_ml_libraries():
    env = {"_STABLEKIT_COMPLETE": "complete_bash", "COMP_WORDS": "stablekit image cat --model tiny-s",
           "COMP_CWORD": "4"}
    result = run_cli(env=env)
    assert result.returncode == 0
    assert {"tiny-sd", "tiny-sdxl", "tiny-sd3", "tiny-svd"} <= set(result.stdout.split())
    assert not top_level(import_trace(env=env)[1]) & set(HEAVY)


def test_version_and_help():
    assert run_process("--version").stdout.startswith("stablekit ")
    result = run_process("image", "--help")
    assert result.returncode == 0 and "--dry-run" in result.stdout and "Examples" in result.stdout


def all_commands() -> list[tuple[str, ...]]:
    import typer

    from stablekit.cli import build_app

    def walk(command, path: tuple[str, ...]):
        yield path
        for name, sub in getattr(command, "commands", {}).items():
            yield from walk(sub, (*path, name))

    return list(walk(typer.main.get_command(build_app()), ()))


def test_no_help_shows_a_type_for_a_flag_that_takes_no_value():
    """Every command's help, typer's own --help and completion flags included: no `<bool>`."""
    commands = all_commands()
    assert ("models", "list") in commands and ("batch",) in commands
    for path in commands:
        result = run_cli(*path, "--help")
        assert result.returncode == 0 and "--help" in result.stdout, (path, result.stderr)
        assert "bool" not in result.stdout.lower(), (path, result.stdout)


def one_line_error(result, code: int, *needles: str) -> None:
    assert result.returncode == code, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    errors = [i for i, line in enumerate(lines) if line.startswith("Error: ")]
    assert len(errors) == 1 and len(lines) - errors[0] <= 2, result.stderr  # last: Error, then at most a Hint
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in result.stderr, result.stderr


@pytest.mark.parametrize(("args", "needles"), [
    (["image", "cat", "--model", "sdxl-trubo"], ["did you mean 'sdxl-turbo'", "models list"]),
    (["image", "cat", "--model", "svd"], ["video model"]),
    (["image", "cat", "--model", "tiny-sd", "--width", "65"], ["multiple of 8"]),
    (["image", "cat", "--model", "tiny-sd", "--steps", "0"], ["--steps 0"]),
    (["image", "cat", "--model", "tiny-sd", "--dtype", "int3"], ["int3"]),
    (["image", "cat", "--model", "tiny-sd", "--device", "cuda"], ["no CUDA device"]),
    (["image", "cat", "--model", "tiny-sd", "-o", "{nope}.png"], ["unknown field {nope}"]),
    (["image", "cat", "--model", "tiny-sd", "-o", "x.gif"], [".gif"]),
    (["image", "cat", "--preset", "nope"], ["unknown preset 'nope'"]),
    (["image", "", "--model", "tiny-sd"], ["prompt is empty"]),
    (["image", "cat", "--bogus"], ["--bogus"]),
    (["models", "info", "nope"], ["unknown model 'nope'"]),
    (["models", "list", "--modality", "smell"], ["--modality smell"]),
])
def test_bad_input_exits_2_with_one_line(args, needles):
    one_line_error(run_cli(*args), 2, *needles)


def test_malformed_user_catalog_names_file_and_key(stablekit_home):
    path = stablekit_home / "catalog.toml"
    path.write_text('[models.mine]\nextends = "sdxl"\nrepo = "me/mine"\nstepz = 3\n')
    one_line_error(run_cli("models", "list"), 2, str(path), "models.mine.stepz")


def test_malformed_preset_names_file_and_key(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text('command = "image"\nguidance = 3\n')
    one_line_error(run_cli("image", "cat", "--preset", str(path)), 2, str(path), "'guidance'")


def test_missing_weights_offline_names_models_pull():
    # --vram: plan as on a machine with room, whatever this one has free right now (the fit is not the subject)
    one_line_error(run_process("image", "a lighthouse at dusk", "-q", "--vram", "64"), 1, "sdxl is not downloaded",
                   "stablekit models pull sdxl")


def test_debug_shows_the_traceback():
    result = run_process("models", "info", "nope", env={"STABLEKIT_DEBUG": "1"})
    assert result.returncode == 2 and "Traceback" in result.stderr


def test_a_failed_parse_leaves_no_lock_for_the_next_call():
    """main() is one run: --locked, set while parsing, ends with it even when a later option fails to parse."""
    from stablekit import lockfile

    one_line_error(run_cli("image", "a cat", "--locked", "--steps", "x"), 2, "--steps")
    assert not lockfile.locked()


def test_no_color_and_no_animation_when_piped():
    result = run_process("image", "cat", "--model", "sdxl-trubo")
    assert "\x1b[" not in result.stderr


def test_models_list_json_has_every_model():
    result = run_cli("models", "list", "--json")
    models = json.loads(result.stdout)
    ids = {m["id"] for m in models}
    assert {"sd15", "sdxl", "sd35-large", "svd-xt", "stable-audio-open", "stablelm-2-12b-chat", "triposr",
            "tiny-sd", "tiny-lm"} <= ids
    sdxl = next(m for m in models if m["id"] == "sdxl")
    assert sdxl["files"]["status"] == "missing" and sdxl["weights_gib"]["float16"] > 6
    video = json.loads(run_cli("models", "list", "--modality", "video", "--json").stdout)
    assert {m["modality"] for m in video} == {"video"}


def test_models_info_shows_licence_gate_defaults_and_memory():
    text = run_cli("models", "info", "sd3").stdout
    for needle in ("Stability AI Community License", "gated       yes", "hf auth login", "num_inference_steps=28",
                   "text_encoder_3 4762.3M", "14.3 GiB in fp16"):
        assert needle in text, needle
    data = json.loads(run_cli("models", "info", "sd3", "--json").stdout)
    assert data["gated"] is True and data["license_url"] and data["memory"]["params"]["transformer"] > 2000
    # What a run at the defaults needs, not the catalog's per-unit override (zero for a family's formula): more
    # than the weights alone, on either device; the same figures as text and as JSON.
    needs = data["memory"]["at_defaults"]
    assert needs["workload"] == "1024x1024"
    assert 14.3 < needs["gpu_bfloat16_gib"] < 20 and 28.7 < needs["cpu_float32_gib"] < 45, needs
    assert (f"needs       ~{needs['gpu_bfloat16_gib']:.1f} GiB on a GPU (bf16), ~{needs['cpu_float32_gib']:.1f} GiB "
            "of RAM on a CPU (float32), at its defaults (1024x1024)") in text
    assert "activations 0.0 GiB" not in text


def test_pull_path_rm_for_a_tiny_model(stablekit_home):
    (stablekit_home / "tiny").unlink()  # this test builds and deletes its own copy
    result = run_cli("models", "pull", "tiny-sd")
    assert result.returncode == 0, result.stderr
    folder = result.stdout.strip()
    assert os.path.isfile(os.path.join(folder, "model_index.json"))
    assert run_cli("models", "path", "tiny-sd").stdout.strip() == folder
    listed = {m["id"]: m for m in json.loads(run_cli("models", "list", "--json").stdout)}
    assert listed["tiny-sd"]["files"]["status"] == "built" and listed["tiny-sd"]["files"]["size_bytes"] > 0
    refused = run_cli("models", "rm", "tiny-sd")
    one_line_error(refused, 2, "--yes")
    assert run_cli("models", "rm", "tiny-sd", "--yes").returncode == 0
    one_line_error(run_cli("models", "path", "tiny-sd"), 1, "models pull tiny-sd")


def test_presets_list_and_show():
    listed = json.loads(run_cli("presets", "list", "--json").stdout)
    assert {"draft", "smoke"} <= {p["name"] for p in listed}
    shown = run_cli("presets", "show", "draft").stdout
    assert "model = 'sdxl-turbo'" in shown and "num_inference_steps = 1" in shown


def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path):
    result = run_cli("image", "a castle", "--model", "sdxl", "--dry-run", "--json", "--vram", "40", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["model"] == "sdxl" and data["files"]["status"] == "missing"
    assert data["plan"]["device"] == "cpu" and data["plan"]["dtype"] == "float32"
    assert data["request"]["width"] == 1024 and any("--vram" in r for r in data["plan"]["reasons"])
    assert not list(tmp_path.glob("*.png"))
    human = run_cli("image", "a castle", "--model", "sd15", "--dry-run")
    assert "why" in human.stdout and "float32" in human.stdout


@pytest.mark.parametrize("args", [
    ("image", "a castle", "-m", "tiny-sd", "-o", "castle.png"),
    ("video", "--image", "castle.png", "-m", "tiny-svd", "-n", "2", "-o", "clip.gif"),
    ("image", "a castle", "-m", "tiny-sd", "--dry-run"),
], ids=["image", "video-n2", "dry-run"])
def test_quiet_after_the_command_silences_the_drawn_seed_too(tmp_path, args):
    """`-q` after the command name is read before the seed is drawn: nothing on stderr, the seed still recorded."""
    from PIL import Image

    Image.new("RGB", (40, 40), (20, 90, 200)).save(tmp_path / "castle.png")
    loud = run_cli(*args, "--overwrite" if "--dry-run" not in args else "--json")
    assert loud.returncode == 0 and "(drawn; pass --seed" in loud.stderr, loud.stderr
    quiet = run_cli(*args, "-q", "--overwrite" if "--dry-run" not in args else "--json")
    assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr
    if "--dry-run" not in args:
        outputs = [Path(line) for line in quiet.stdout.split()]
        assert outputs and all(isinstance(json.loads(Path(f"{o}.json").read_text())["parameters"]["seed"], int)
                               for o in outputs)


def test_does_not_fit_is_a_clear_failure():
    result = run_cli("image", "a castle", "--model", "sd35-large", "--dry-run", "--vram", "4", "--device", "cpu")
    one_line_error(result, 1, "sd35-large does not fit", "Hint:")


def test_doctor_reports_hardware_versions_and_plan():
    data = json.loads(run_cli("doctor", "--model", "sd15", "--json").stdout)
    assert data["hardware"]["accelerator"] in ("cpu", "cuda", "mps")
    assert data["versions"]["torch"] and data["plan"]["plan"]["dtype"]
    assert data["hub"]["logged_in"] is False


@pytest.fixture
def fake_hub_env(stablekit_home):
    with FakeHub() as server:
        yield server, {"HF_ENDPOINT": server.url, "HF_HUB_OFFLINE": "0"}


def test_gated_model_names_licence_and_login_and_never_the_token(stablekit_home, fake_hub_env):
    server, env = fake_hub_env
    server.gated.add("org/gated")
    (stablekit_home / "catalog.toml").write_text('[models.locked]\nextends = "sd15"\nrepo = "org/gated"\n')
    token = "hf_ThisIsASecretTokenValue"
    result = run_cli("image", "cat", "--model", "locked", "--device", "cpu", env={**env, "HF_TOKEN": token})
    one_line_error(result, 1, "org/gated is gated", "https://huggingface.co/org/gated", "hf auth login")
    assert token not in result.stdout + result.stderr


def test_withdrawn_model_says_so(stablekit_home, fake_hub_env):
    _, env = fake_hub_env
    (stablekit_home / "catalog.toml").write_text('[models.old]\nextends = "sd15"\nrepo = "org/deleted"\n')
    one_line_error(run_cli("models", "pull", "old", env=env), 1, "org/deleted is not on the hub")


def test_pull_from_the_hub_then_generate_offline(stablekit_home, fake_hub_env, tmp_path):
    """A model served by a (fake) hub is pulled once, then loads through the same code as any real repo."""
    server, env = fake_hub_env
    built = run_cli("models", "pull", "tiny-sd")
    assert built.returncode == 0, built.stderr
    server.repos["org/tiny-sd"] = Path(built.stdout.strip())
    (stablekit_home / "catalog.toml").write_text('[models.hubtiny]\nextends = "tiny-sd"\nrepo = "org/tiny-sd"\n')
    pulled = run_cli("models", "pull", "hubtiny", env=env)
    assert pulled.returncode == 0, pulled.stderr
    assert "models--org--tiny-sd" in pulled.stdout
    made = run_cli("image", "a lighthouse", "--model", "hubtiny", "--seed", "3", "-q")
    assert made.returncode == 0, made.stderr
    assert made.stdout.strip().endswith("a-lighthouse-3.png")
