"""The job: one flat JSON object, built and validated in one place."""

from __future__ import annotations

import json

import pytest

from stablekit.errors import UsageError
from stablekit.jobs import JOB_KEYS, job_from, job_from_record, output_count, with_seed


def test_flags_over_preset_over_model_defaults_over_type_defaults(tmp_path):
    preset = tmp_path / "p.toml"
    preset.write_text('command = "image"\nnum_inference_steps = 9\nguidance_scale = 2.5\n')
    job = job_from("image", {"prompt": "a fox", "model": "tiny-sd", "guidance_scale": 4.0, "width": None},
                   preset=str(preset))
    request = job.request
    assert (request.num_inference_steps, request.guidance_scale) == (9, 4.0)  # preset, then the flag
    assert request.width == 64 and request.num_images == 1  # the model's default, the type's default
    assert job.spec.id == "tiny-sd" and job.command == "image"


@pytest.mark.parametrize("command,tiny,real", [("video", "tiny-svd", "svd-xt"), ("mesh", "tiny-triposr", "triposr")])
def test_a_tiny_model_draws_its_first_image_with_a_tiny_model(command, tiny, real):
    """Offline smoke runs from a prompt need no download: the tiny models pair with tiny-sdxl, the real ones with
    sdxl-turbo; --image-model still wins."""
    assert job_from(command, {"prompt": "a boat", "model": tiny}).request.image_model == "tiny-sdxl"
    assert job_from(command, {"prompt": "a boat", "model": real}).request.image_model == "sdxl-turbo"
    chosen = job_from(command, {"prompt": "a boat", "model": tiny, "image_model": "tiny-sd"})
    assert chosen.request.image_model == "tiny-sd"


def test_the_flat_object_holds_every_request_field_and_the_job_keys():
    job = job_from("audio", {"prompt": "rain", "model": "tiny-audio", "seed": 4, "output": "x.wav", "id": "r1"})
    data = job.to_dict()
    assert set(JOB_KEYS) <= set(data) and data["num_inference_steps"] == job.request.num_inference_steps
    again = job_from("audio", json.loads(json.dumps(data)))
    assert again == job and again.digest() == job.digest()


def test_the_digest_follows_what_decides_the_output_not_its_name():
    base = job_from("image", {"prompt": "a fox", "model": "tiny-sd", "seed": 1})
    assert base.digest() == job_from("image", {"prompt": "a fox", "model": "tiny-sd", "seed": 1,
                                               "output": "x.png", "id": "a"}).digest()
    assert base.digest() != job_from("image", {"prompt": "a fox", "model": "tiny-sd", "seed": 2}).digest()


@pytest.mark.parametrize(("values", "message"), [
    ({"prompt": "x", "stepz": 3}, "line 7: unknown key 'stepz' for `stablekit image`"),
    ({"prompt": "x", "num_inference_steps": "many"}, "line 7: 'num_inference_steps' should be int"),
    ({"prompt": "x", "guidance_scale": float("nan")}, "line 7: 'guidance_scale' must be a finite number"),
    ({"prompt": "x", "guidance_scale": float("inf")}, "line 7: 'guidance_scale' must be a finite number"),
    ({"prompt": "x", "seed": True}, "line 7: 'seed' should be int"),
    ({"prompt": 3}, "line 7: 'prompt' should be str"),
])
def test_one_validation_pass_names_the_key_and_the_place(values, message):
    with pytest.raises(UsageError) as err:
        job_from("image", {"model": "tiny-sd", **values}, where="line 7")
    assert message in err.value.message and err.value.exit_code == 2


def test_a_sidecars_parameters_give_back_the_job_without_the_details():
    job = job_from("image", {"prompt": "a fox", "model": "tiny-sd", "seed": 5, "num_images": 2})
    recorded = {**job.to_dict(), "sampler": "PNDMScheduler", "index": 1, "stablekit_version": "0.1.0",
                "lora_details": []}
    assert job_from_record(recorded, "a.png.json") == job
    with pytest.raises(UsageError, match="no stablekit job recorded"):
        job_from_record({"prompt": "x"}, "b.png.json")


def test_seeds_are_decided_once_and_said():
    notes: list[str] = []
    job = with_seed(job_from("image", {"prompt": "a fox", "model": "tiny-sd"}), notes.append)
    assert isinstance(job.seed, int) and notes == [f"seed {job.seed} (drawn; pass --seed {job.seed} to repeat)"]
    assert with_seed(job, notes.append) is job and len(notes) == 1
    greedy = job_from("text", {"prompt": "hi", "model": "tiny-lm", "temperature": 0.0})
    assert with_seed(greedy).seed is None, "greedy text draws nothing"
    assert output_count(job_from("image", {"prompt": "x", "model": "tiny-sd", "num_images": 3})) == 3
