"""`stablekit audio` requests: length and start, limits checked before loading, the output format rule."""

from __future__ import annotations

import pytest

from stablekit.engines import audio as engine
from stablekit.errors import UsageError
from stablekit.params import AudioRequest, resolve
from stablekit.registry import load_registry


@pytest.fixture
def sao():
    return load_registry().resolve("stable-audio-open", "audio")


def request_for(spec, preset=None, **flags) -> AudioRequest:
    return resolve("audio", prompt="rain", flags=flags, preset=preset or {}, model_defaults=spec.defaults)


def test_model_defaults_fill_the_request(sao):
    request = request_for(sao)
    assert (request.audio_start_in_s, request.audio_end_in_s, request.num_inference_steps) == (0.0, 10.0, 100)
    assert request.negative_prompt == "low quality, average quality"
    assert engine.workload(request).seconds == 10 and engine.workload(request).batch == 1


def test_seconds_is_the_length_and_start_shifts_the_clip(sao):
    base = request_for(sao, num_waveforms_per_prompt=3)
    moved = engine.with_length(base, seconds=5, start=2)
    assert (moved.audio_start_in_s, moved.audio_end_in_s) == (2, 7)
    assert engine.with_length(base, start=2).audio_end_in_s == 12, "the default length is kept"
    assert engine.workload(moved).seconds == 5 and engine.workload(moved).batch == 3
    preset = request_for(sao, preset={"audio_start_in_s": 1.0, "audio_end_in_s": 4.0})
    assert engine.length_of(engine.with_length(preset)) == 3


@pytest.mark.parametrize(("seconds", "start", "message"), [
    (47.56, None, "--seconds 47.56: stable-audio-open renders at most 47.55 s"),
    (0, None, "--seconds 0: the length must be more than 0"),
    (-3, None, "--seconds -3"),
    (float("nan"), None, "--seconds nan"),
    (10, 40, "ends at 50 s"),
    (5, -1, "--start -1: must not be negative"),
])
def test_bad_lengths_are_usage_errors(sao, seconds, start, message):
    with pytest.raises(UsageError) as caught:
        engine.validate(engine.with_length(request_for(sao), seconds=seconds, start=start), sao)
    assert message in caught.value.message


def test_the_maximum_itself_is_allowed(sao):
    engine.validate(engine.with_length(request_for(sao), seconds=47.55), sao)
    engine.validate(engine.with_length(request_for(sao), seconds=0.45, start=47.1), sao)


def test_non_audio_models_and_counts_are_refused(sao):
    with pytest.raises(UsageError, match="--count 0"):
        engine.validate(request_for(sao, num_waveforms_per_prompt=0), sao)
    with pytest.raises(UsageError, match="--steps 0"):
        engine.validate(request_for(sao, num_inference_steps=0), sao)
    with pytest.raises(UsageError, match="prompt is empty"):
        engine.validate(resolve("audio", prompt=" ", flags={}, preset={}, model_defaults={}), sao)


def test_output_format_follows_the_extension():
    assert engine.output_format(None).subtype == "PCM_16"
    assert engine.output_format("{seed}").extension == ".wav"
    assert engine.output_format("a/{seed}.FLAC", "24").subtype == "PCM_24"
    assert engine.output_format("x.ogg", None, False).normalize is False
    with pytest.raises(UsageError):
        engine.output_format("x.ogg", "16")
