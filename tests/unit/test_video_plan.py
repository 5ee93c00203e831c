"""`stablekit video` without a model: the device plan for SVD, the request's checks and the output rules."""

from __future__ import annotations

from dataclasses import replace

import pytest
from PIL import Image

from stablekit import params as requests
from stablekit.devices import Hardware
from stablekit.engines import video as engine
from stablekit.errors import InputError, PresetError, UsageError
from stablekit.jobs import job_from
from stablekit.registry import load_registry

CUDA = {
    "8GB": Hardware("cuda", "RTX 4060", 8, 7.6, 32, 28, (8, 9), 1),
    "12GB": Hardware("cuda", "RTX 4070", 12, 11.5, 32, 28, (8, 9), 1),
    "24GB": Hardware("cuda", "RTX 4090", 24, 23.4, 64, 60, (8, 9), 1),
}


def job_for(model: str, **flags):
    return job_from("video", {"model": model, "image": "in.png", **flags})


def request_for(model: str, **flags) -> requests.VideoRequest:
    return job_for(model, **flags).request


@pytest.mark.parametrize("profile", CUDA)
@pytest.mark.parametrize("model", ["svd-xt", "svd-xt-1-1"])
def test_svd_xt_plans_chunked_decoding_within_budget(model, profile):
    request = request_for(model)
    assert (request.num_frames, request.width, request.height) == (25, 1024, 576)
    plan = engine.plan_svd(job_for(model), CUDA[profile]).device_plan
    assert plan.decode_chunk_size < 25 and plan.forward_chunking
    assert plan.peak_gib <= plan.budget_gib
    assert any(r.startswith(f"video: decode {plan.decode_chunk_size} frames at a time") for r in plan.reasons)


@pytest.mark.parametrize(("profile", "chunked"), [("8GB", True), ("12GB", True), ("24GB", False)])
def test_svd_decodes_all_14_frames_at_once_only_where_they_fit(profile, chunked):
    plan = engine.plan_svd(job_for("svd"), CUDA[profile]).device_plan
    assert (plan.decode_chunk_size < 14) is chunked and plan.forward_chunking is chunked
    assert plan.peak_gib <= plan.budget_gib


def test_decode_chunk_flag_replaces_the_plans_and_says_so():
    plan = engine.plan_svd(job_for("svd-xt", decode_chunk_size=2), CUDA["24GB"]).device_plan
    assert plan.decode_chunk_size == 2
    video_reasons = [r for r in plan.reasons if r.startswith("video:")]
    assert video_reasons == ["video: decode 2 frames at a time: asked for with --decode-chunk"]
    capped = engine.plan_svd(job_for("svd-xt", decode_chunk_size=100), CUDA["24GB"]).device_plan
    assert capped.decode_chunk_size == 25


def test_the_workload_is_the_videos_size_and_frames():
    work = engine.workload(request_for("tiny-svd", num_frames=3))
    assert (work.width, work.height, work.frames, work.batch) == (32, 32, 3, 1)


@pytest.mark.parametrize(("changes", "message"), [
    ({"num_frames": 0}, "--frames 0: must be at least 1"),
    ({"num_frames": -3}, "--frames -3: must be at least 1"),
    ({"fps": 0}, "--fps 0: must be at least 1"),
    ({"fps": -7}, "--fps -7: must be at least 1"),
    ({"num_inference_steps": 0}, "--steps 0"),
    ({"width": 30}, "--width 30: must be a positive multiple of 8 for tiny-svd"),
    ({"height": 0}, "--height 0: must be a positive multiple of 8"),
    ({"decode_chunk_size": 0}, "--decode-chunk 0"),
    ({"motion_bucket_id": -1}, "--motion -1"),
    ({"noise_aug_strength": -0.1}, "--noise-aug -0.1"),
    ({"min_guidance_scale": 3.0, "max_guidance_scale": 1.0}, "--min-guidance 3 is above --max-guidance 1"),
    ({"prompt": "a boat"}, "give a prompt or --image, not both"),
    ({"image": None}, "missing the input"),
    ({"keep_image": True}, "--keep-image keeps the frame drawn from a prompt"),
])
def test_bad_requests_are_usage_errors(changes, message):
    with pytest.raises(UsageError) as err:
        engine.validate(replace(request_for("tiny-svd"), **changes), load_registry().get("tiny-svd"))
    assert message in err.value.message and "\n" not in err.value.message


def test_only_video_models_make_videos():
    with pytest.raises(UsageError, match="tiny-sd does not make videos"):
        engine.validate(request_for("tiny-svd"), load_registry().get("tiny-sd"))


@pytest.mark.parametrize(("output", "extension"), [
    (None, ".mp4"), ("a.mp4", ".mp4"), ("a.GIF", ".gif"), ("a.webp", ".webp"), ("frames/", ""), ("{seed}", ""),
])
def test_the_output_extension_chooses_the_format(output, extension):
    engine.check_output(request_for("tiny-svd"), output)
    assert engine.output_extension(output) == extension


@pytest.mark.parametrize(("output", "fps", "message"), [
    ("a.avi", 7, "'.avi' is not a supported format"), ("a.gif", 60, "--fps 60: GIF plays at most 50 fps"),
    ("{frame}.mp4", 7, "unknown field {frame}"),
])
def test_outputs_that_cannot_work_fail_first(output, fps, message):
    with pytest.raises(UsageError, match=message.replace("{", r"\{").replace("}", r"\}")):
        engine.check_output(request_for("tiny-svd", fps=fps), output)


def test_the_input_is_scaled_to_cover_and_centre_cropped(tmp_path):
    wide = tmp_path / "wide.png"
    image = Image.new("RGB", (120, 40), (255, 0, 0))
    image.paste((0, 0, 255), (0, 0, 30, 40))  # a blue band on the left that the crop removes
    image.save(wide)
    first = engine.fit_image(str(wide), 32, 32)
    assert first.image.size == (32, 32) and first.rule == "input 120x40 scaled to cover 32x32 and centre-cropped"
    assert first.image.getpixel((0, 16)) == (255, 0, 0), "the sides are cut, the middle kept, no stretching"
    exact = tmp_path / "exact.png"
    Image.new("RGBA", (32, 32), (0, 0, 0, 0)).save(exact)
    same = engine.fit_image(str(exact), 32, 32)
    assert same.rule == "input 32x32: the video's size" and same.image.getpixel((5, 5)) == (255, 255, 255)


@pytest.mark.parametrize(("content", "message"), [(None, "no such file"), (b"not a picture", "not a readable image")])
def test_missing_or_unreadable_images_are_input_errors(tmp_path, content, message):
    path = tmp_path / "in.png"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(InputError, match=message) as err:
        engine.fit_image(str(path), 32, 32)
    assert err.value.exit_code == 2


def test_presets_take_the_pipelines_argument_names_but_not_the_image():
    fields = requests.settable_fields("video")
    for name in ("num_frames", "fps", "motion_bucket_id", "noise_aug_strength", "num_inference_steps",
                 "min_guidance_scale", "max_guidance_scale", "decode_chunk_size", "width", "height"):
        assert name in fields
    assert "image" not in fields and "prompt" not in fields
    with pytest.raises(PresetError, match="unknown key 'image'"):
        requests.check_values("video", {"image": "x.png"}, "p.toml")
    with pytest.raises(PresetError, match="'fps' should be int"):
        requests.check_values("video", {"fps": "fast"}, "p.toml")


@pytest.mark.parametrize("model", ["svd", "svd-xt", "svd-xt-1-1", "tiny-svd"])
def test_every_video_models_defaults_are_request_fields(model):
    spec = load_registry().get(model)
    requests.check_values("video", spec.defaults, model, error=UsageError)
    request = request_for(model)
    engine.validate(request, spec)
