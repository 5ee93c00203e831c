"""Presets: data checked against the request; precedence flag > preset > model defaults > global defaults."""

from __future__ import annotations

import pytest

from stablekit import params as requests
from stablekit.errors import PresetError
from stablekit.preset_files import find_preset, list_presets, load_preset
from stablekit.registry import load_registry


def test_builtin_presets_are_valid():
    presets = {p.name: p for p in list_presets()}
    assert {"draft", "portrait", "landscape", "smoke"} <= set(presets)
    for preset in presets.values():
        assert preset.description and preset.origin == "built-in"
        load_registry().resolve(preset.values["model"], "image")


def test_user_preset_by_name_replaces_builtin(stablekit_home):
    (stablekit_home / "presets").mkdir()
    (stablekit_home / "presets" / "draft.toml").write_text('command = "image"\nnum_inference_steps = 3\n')
    assert load_preset("draft", "image").values == {"num_inference_steps": 3}
    assert find_preset("draft").origin == "user"


@pytest.mark.parametrize(("text", "expected"), [
    ('command = "image"\nstepz = 3\n', "unknown key 'stepz'"),
    ('command = "image"\nnum_inference_steps = "many"\n', "'num_inference_steps' should be int"),
    ('command = "image"\nwidth = true\n', "'width' should be int"),
    ('command = "dance"\n', "'command' must be one of"),
    ('command = "image"\nwidth = \n', "not valid TOML"),
])
def test_bad_presets_name_file_and_key(tmp_path, text, expected):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(PresetError) as err:
        load_preset(str(path), "image")
    assert str(path) in err.value.message and expected in err.value.message


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(PresetError) as err:
        load_preset("nope", "image")
    assert "draft" in err.value.hint


def test_precedence_flag_over_preset_over_model_over_global():
    spec = load_registry().get("sdxl-turbo")
    preset = {"num_inference_steps": 4, "width": 768}
    request = requests.resolve("image", prompt="p", flags={"width": 640, "num_inference_steps": None},
                               preset=preset, model_defaults=spec.defaults)
    assert request.width == 640  # flag
    assert request.num_inference_steps == 4  # preset
    assert request.guidance_scale == 0.0 and request.height == 512  # model defaults
    assert request.num_images == 1 and request.batch_size == 1  # global defaults


def test_one_bad_user_preset_is_listed_as_broken_and_the_rest_still_list(stablekit_home):
    folder = stablekit_home / "presets"
    folder.mkdir()
    (folder / "mine.toml").write_text('command = "image"\nnum_inference_steps = 3\n')
    (folder / "typo.toml").write_text('command = "image"\nstepz = 3\n')
    (folder / "garbled.toml").write_text('command = "image"\nwidth = \n')
    presets = {p.name: p for p in list_presets()}
    assert presets["mine"].problem is None and presets["mine"].values == {"num_inference_steps": 3}
    assert "unknown key 'stepz'" in presets["typo"].problem and presets["typo"].origin == "user"
    assert "not valid TOML" in presets["garbled"].problem
    assert presets["draft"].problem is None  # built-ins unaffected
    with pytest.raises(PresetError, match="unknown key 'stepz'"):
        load_preset("typo", "image")  # using it still fails, naming the file and key


def test_presets_list_command_shows_broken_files(stablekit_home):
    import json

    from conftest import run_cli

    (stablekit_home / "presets").mkdir()
    (stablekit_home / "presets" / "typo.toml").write_text('command = "image"\nstepz = 3\n')
    table = run_cli("presets", "list")
    assert table.returncode == 0, table.stderr
    row = next(line for line in table.stdout.splitlines() if line.startswith("typo"))
    assert "broken" in row and "stepz" in row
    assert "draft" in table.stdout and "preset 'typo' is broken" in table.stderr
    listed = json.loads(run_cli("presets", "list", "--json").stdout)
    by_name = {p["name"]: p for p in listed}
    assert "stepz" in by_name["typo"]["problem"] and by_name["draft"]["problem"] is None
