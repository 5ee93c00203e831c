"""Job files: every line checked before anything loads, ids and seeds decided the same way on every run."""

from __future__ import annotations

import io
import json

import pytest

from stablekit.batch_file import derived_seed, digest_of, load_entries, parse_sets
from stablekit.errors import InputError, UsageError
from stablekit.outputs import OutputOptions, check_template, target_path


def entries_of(*lines, sets=(), presets=(), name=None, tmp_path=None):
    text = "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n"
    if name is not None:
        path = tmp_path / name
        path.write_text(text)
        return load_entries(str(path), io.StringIO(""), sets=parse_sets(sets), presets=presets)
    return load_entries("-", io.StringIO(text), sets=parse_sets(sets), presets=presets)


def bad(*lines, sets=(), presets=()) -> str:
    with pytest.raises(UsageError) as caught:
        entries_of(*lines, sets=sets, presets=presets)
    assert caught.value.exit_code == 2
    return caught.value.message


def test_blank_and_comment_lines_are_skipped_and_lines_keep_their_numbers():
    entries = entries_of("# renders for the shop", "", {"command": "image", "prompt": "a fox", "model": "tiny-sd"},
                         "   ", "  # another note", {"command": "text", "prompt": "hi", "model": "tiny-lm"})
    assert [(e.line, e.job.command) for e in entries] == [(3, "image"), (6, "text")]
    assert entries[0].where == "<stdin> line 3"


def test_ids_are_given_or_derived_from_the_parameters_and_seeds_from_the_id():
    line = {"command": "image", "prompt": "a fox", "model": "tiny-sd"}
    first, again = entries_of(line)[0], entries_of(line)[0]
    assert first.id == again.id and first.id.startswith("image-") and len(first.id) == len("image-") + 12
    assert first.job.seed == again.job.seed == derived_seed(first.id)  # a rerun or another worker: the same seed
    assert first.digest == again.digest
    other = entries_of({**line, "prompt": "a dog"})[0]
    assert other.id != first.id and other.job.seed != first.job.seed
    named = entries_of({**line, "id": "fox-01"})[0]
    assert named.id == "fox-01" and named.job.seed == derived_seed("fox-01")
    seeded = entries_of({**line, "seed": 7})[0]
    assert seeded.job.seed == 7 and seeded.id != first.id


def test_jobs_that_draw_nothing_get_no_seed():
    greedy, mesh = entries_of({"command": "text", "prompt": "hi", "model": "tiny-lm", "temperature": 0},
                              {"command": "mesh", "image": "chair.png", "model": "tiny-triposr"})
    assert greedy.job.seed is None and mesh.job.seed is None
    sampled = entries_of({"command": "text", "prompt": "hi", "model": "tiny-lm"})[0]
    assert sampled.job.seed == derived_seed(sampled.id)


def test_outputs_default_to_the_id_with_the_formats_extension(tmp_path):
    image, several, video, templated = entries_of(
        {"command": "image", "prompt": "a", "model": "tiny-sd", "id": "one"},
        {"command": "image", "prompt": "b", "model": "tiny-sd", "id": "two", "num_images": 3},
        {"command": "video", "prompt": "c", "model": "tiny-svd", "image_model": "tiny-sd", "id": "clip"},
        {"command": "image", "prompt": "d", "model": "tiny-sd", "id": "sku9", "output": "shop/{id}-{seed}.webp"})
    assert (image.job.output, several.job.output, video.job.output) == ("one", "two-{index}", "clip.mp4")
    assert templated.job.output == "shop/sku9-{seed}.webp"  # {id} written in; the sink fills the rest
    name = target_path(OutputOptions(output=several.job.output, output_dir=str(tmp_path)), model="tiny-sd", seed=1,
                       index=2, count=3, prompt="b", extension=".png")
    assert name == tmp_path / "two-2.png"


def test_id_is_a_template_field_everywhere(tmp_path):
    check_template(OutputOptions(output="{id}.png"), (".png",))
    path = target_path(OutputOptions(output="{id}-{seed}", output_dir=str(tmp_path)), model="m", seed=3, index=0,
                       count=1, prompt="p", extension=".png", id="Fox_1-a")
    assert path == tmp_path / "Fox_1-a-3.png"  # an id names files as it is, case kept


def test_set_defaults_are_typed_per_command_and_lines_win():
    image, text = entries_of({"command": "image", "prompt": "a", "model": "tiny-sd"},
                             {"command": "text", "prompt": "b", "model": "tiny-lm", "max_new_tokens": 4},
                             sets=["num_inference_steps=3", "max_new_tokens=9", "negative_prompt=blurry, dark",
                                   "vram=1.5"])
    assert image.job.request.num_inference_steps == 3 and image.job.request.negative_prompt == "blurry, dark"
    assert text.job.request.max_new_tokens == 4  # the line's own value wins
    assert image.job.request.vram == 1.5 and text.job.request.vram == 1.5
    audio = entries_of({"command": "audio", "prompt": "rain", "model": "tiny-audio"}, sets=["bit_depth=16"])[0]
    assert audio.job.request.bit_depth == "16"  # text where the field is text, though it reads as a number


@pytest.mark.parametrize("item, message", [
    ("steps", "expected KEY=VALUE"),
    ("stepz=4", "--set stepz: not a job key of any command"),
])
def test_bad_set_items_are_usage_errors(item, message):
    with pytest.raises(UsageError, match=message):
        parse_sets([item])


def test_placement_does_not_change_the_digest_but_precision_does():
    line = {"command": "image", "prompt": "a", "model": "tiny-sd", "id": "a"}
    plain = entries_of(line)[0]
    assert entries_of({**line, "vram": 2.0, "offload": "none"})[0].digest == plain.digest
    assert entries_of({**line, "dtype": "bfloat16"})[0].digest != plain.digest
    assert digest_of(plain.job) == plain.digest
    assert entries_of({**line, "output": "other.png"})[0].digest == plain.digest  # the name is not a parameter


def test_presets_apply_to_the_lines_of_their_command(stablekit_home):
    (stablekit_home / "presets").mkdir(exist_ok=True)
    (stablekit_home / "presets" / "quick.toml").write_text('command = "image"\nnum_inference_steps = 1\n')
    image, text = entries_of({"command": "image", "prompt": "a", "model": "tiny-sd"},
                             {"command": "text", "prompt": "b", "model": "tiny-lm"}, presets=["quick"])
    assert image.job.request.num_inference_steps == 1 and text.job.command == "text"
    message = bad({"command": "text", "prompt": "b", "model": "tiny-lm"}, presets=["quick"])
    assert "--preset quick is for `stablekit image`" in message


@pytest.mark.parametrize("lines, needles", [
    (['{"command": "image", "prompt": "a", "model": "tiny-sd"}', '{"command": "image", "prompt": '],
     ["<stdin> line 2", "not valid JSON"]),
    (['["image", "a"]'], ["line 1", "a job is a JSON object"]),
    (['{"prompt": "a fox"}'], ["line 1", "missing 'command'"]),
    (['{"command": "painting", "prompt": "a"}'], ["line 1", "'command' must be one of"]),
    (['{"command": "image", "prompt": "a", "model": "tiny-sd", "stepz": 4}'], ["line 1", "unknown key 'stepz'"]),
    (['# x', '{"command": "image", "prompt": "a", "model": "tiny-sd", "num_inference_steps": "four"}'],
     ["line 2", "'num_inference_steps' should be int"]),
    (['{"command": "image", "prompt": "a", "model": "no-such-model"}'], ["line 1", "no-such-model"]),
    (['{"command": "image", "prompt": "a", "model": "tiny-sd", "id": "../up"}'], ["line 1", "'id' '../up'"]),
    (['{"command": "image", "prompt": "a", "model": "tiny-sd", "id": "v1.2"}'], ["line 1", "'id' 'v1.2'"]),
    (['{"command": "image", "prompt": "a", "model": "tiny-sd", "id": 7}'], ["line 1", "'id' should be"]),
    (['{"command": "image", "prompt": "a", "model": "tiny-sd", "output": "{frame}.png"}'],
     ["line 1", "unknown field {frame}"]),
    (['{"command": "image", "prompt": "a", "model": "tiny-sd", "id": "x"}',
      '{"command": "image", "prompt": "b", "model": "tiny-sd", "id": "x"}'], ["line 2", "'x' is line 1's too"]),
    (['{"command": "image", "prompt": "a", "model": "tiny-sd"}', '{"command": "image", "prompt": "a", '
      '"model": "tiny-sd"}'], ["line 2", "is line 1's too"]),
    (['', '# nothing here'], ["no jobs"]),
])
def test_a_bad_line_is_a_usage_error_naming_the_line_and_the_key(lines, needles):
    message = bad(*lines)
    for needle in needles:
        assert needle in message, message


def test_the_file_is_named_in_messages_and_a_missing_file_is_an_input_error(tmp_path):
    with pytest.raises(UsageError, match=r"jobs.jsonl line 1: unknown key 'sed'"):
        entries_of({"command": "image", "prompt": "a", "model": "tiny-sd", "sed": 1}, name="jobs.jsonl",
                   tmp_path=tmp_path)
    with pytest.raises(InputError, match="no such file"):
        load_entries(str(tmp_path / "missing.jsonl"), io.StringIO(""))
