"""The audio writer's rules without a model: full scale (normalise or clip), bit depths, tags, safe writing."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from stablekit.errors import OutputError, UsageError
from stablekit.writers.audio import AudioFormat, audio_format, fit_full_scale, write_audio

RATE = 8000


def tone(seconds: float = 0.25, peak: float = 0.5, channels: int = 2, rate: int = RATE) -> np.ndarray:
    """A stereo sine (left) and a detuned sine (right) peaking at `peak`, frames x channels."""
    t = np.arange(round(seconds * rate)) / rate
    columns = [np.sin(2 * np.pi * (440 + 110 * c) * t) for c in range(channels)]
    data = np.stack(columns, axis=1)
    return (data * peak / np.abs(data).max()).astype(np.float32)


def test_quiet_audio_is_left_untouched():
    data = tone(peak=0.5)
    fitted, level = fit_full_scale(data)
    assert np.array_equal(fitted, data) and level.gain_db == 0 and level.clipped == 0
    assert level.to_dict()["model_peak_dbfs"] == pytest.approx(-6.02, abs=0.01)


def test_normalise_lowers_the_whole_clip_to_full_scale():
    data = tone(peak=4.0)
    fitted, level = fit_full_scale(data, normalize=True)
    assert np.abs(fitted).max() == 1.0
    assert np.allclose(fitted, data / 4.0, atol=1e-7), "one gain for the whole clip keeps its shape"
    assert level.gain_db == pytest.approx(-12.04, abs=0.01) and level.clipped == 0


def test_no_normalize_clips_only_the_samples_beyond_full_scale():
    data = np.array([[0.5, -0.25], [1.5, -3.0], [1.0, 0.999]], dtype=np.float32)
    fitted, level = fit_full_scale(data, normalize=False)
    assert fitted.tolist() == [[0.5, -0.25], [1.0, -1.0], [1.0, 0.9990000128746033]]
    assert level.clipped == 2 and level.gain_db == 0


def test_nan_is_refused():
    with pytest.raises(OutputError, match="NaN"):
        fit_full_scale(np.array([[0.1, np.nan]]))


@pytest.mark.parametrize(("extension", "bit_depth", "subtype", "quantum"), [
    (".wav", None, "PCM_16", 2**-15), (".wav", "24", "PCM_24", 2**-23), (".wav", "32f", "FLOAT", 0),
    (".flac", None, "PCM_16", 2**-15), (".flac", "24", "PCM_24", 2**-23),
])
def test_bit_depths_round_trip(tmp_path, extension, bit_depth, subtype, quantum):
    data = tone(seconds=0.3, peak=2.0)  # hot: the full-scale rule runs first
    path, level = write_audio(data, RATE, tmp_path / f"a{extension}", audio_format(extension, bit_depth))
    info = sf.info(path)
    assert (info.subtype, info.samplerate, info.channels, info.frames) == (subtype, RATE, 2, 2400)
    back, _ = sf.read(path, dtype="float64", always_2d=True)
    assert np.abs(back).max() <= 1.0
    assert np.abs(back - data / 2.0).max() <= quantum, "full-scale samples must not wrap"
    assert level.gain_db == pytest.approx(-6.02, abs=0.01)


def test_full_scale_samples_do_not_wrap_in_16_bit(tmp_path):
    data = np.array([[1.0, -1.0], [0.0, 0.0]], dtype=np.float32)
    path, _ = write_audio(data, RATE, tmp_path / "edge.wav")
    ints, _ = sf.read(path, dtype="int16")
    assert ints[0, 0] > 32000 and ints[0, 1] < -32000


def test_clipped_wav_holds_full_scale_not_wrapped_values(tmp_path):
    data = np.array([[3.0, -3.0]] * 4, dtype=np.float32)
    path, level = write_audio(data, RATE, tmp_path / "clip.wav", audio_format(".wav", "16", normalize=False))
    ints, _ = sf.read(path, dtype="int16")
    assert (ints[:, 0] > 32000).all() and (ints[:, 1] < -32000).all() and level.clipped == 8


def test_ogg_vorbis_reads_back_within_full_scale(tmp_path):
    noise = np.random.default_rng(0).uniform(-1, 1, (RATE // 2, 2)).astype(np.float32)
    noise[0] = [1.0, -1.0]  # at full scale already: the codec's overshoot is what must be caught
    path, level = write_audio(noise, RATE, tmp_path / "n.ogg", audio_format(".ogg"))
    back, rate = sf.read(path, always_2d=True)
    assert rate == RATE and back.shape == noise.shape and sf.info(path).subtype == "VORBIS"
    assert np.abs(back).max() <= 1.0
    assert level.gain_db < 0, "the overshoot was measured and the gain lowered"


def test_unsupported_formats_are_usage_errors():
    assert audio_format(".WAV").subtype == "PCM_16"
    assert audio_format(".flac").subtype == "PCM_16"
    assert audio_format(".ogg") == AudioFormat(".ogg", None, True)
    with pytest.raises(UsageError, match="32f"):
        audio_format(".flac", "32f")
    with pytest.raises(UsageError, match="no bit depth"):
        audio_format(".ogg", "24")
    with pytest.raises(UsageError, match=".mp3"):
        audio_format(".mp3")


@pytest.mark.parametrize("extension", [".wav", ".flac", ".ogg"])
def test_tags_carry_title_comment_and_software(tmp_path, extension):
    comment = json.dumps({"seed": 5, "model": "tiny-audio"})
    path, _ = write_audio(tone(), RATE, tmp_path / f"t{extension}", audio_format(extension),
                          tags={"title": "a dog barks", "comment": comment, "software": "stablekit test"})
    with sf.SoundFile(path) as file:
        assert file.title == "a dog barks" and json.loads(file.comment) == {"seed": 5, "model": "tiny-audio"}
        assert file.software.startswith("stablekit test")


def test_a_comment_too_long_for_wav_points_to_the_sidecar(tmp_path):
    path, _ = write_audio(tone(), RATE, tmp_path / "long.wav",
                          tags={"title": "x" * 5000, "comment": "y" * 5000, "software": "stablekit test"})
    with sf.SoundFile(path) as file:
        assert "sidecar" in file.comment and file.title.startswith("xxx") and len(file.title) < 2000
        assert file.software.startswith("stablekit test"), "later tags survive"


@pytest.mark.parametrize("extension", [".wav", ".flac"])
def test_same_input_same_bytes(tmp_path, extension):
    tags = {"title": "t", "comment": "{}"}
    a, _ = write_audio(tone(), RATE, tmp_path / f"a{extension}", audio_format(extension), tags=tags)
    b, _ = write_audio(tone(), RATE, tmp_path / f"b{extension}", audio_format(extension), tags=tags)
    assert a.read_bytes() == b.read_bytes()


def test_never_overwrites_and_leaves_no_partial_file(tmp_path):
    out = tmp_path / "out"
    first, _ = write_audio(tone(), RATE, out / "x.wav")
    second, _ = write_audio(tone(peak=0.1), RATE, out / "x.wav")
    assert (first.name, second.name) == ("x.wav", "x-2.wav")
    third, _ = write_audio(tone(peak=0.2), RATE, out / "x.wav", overwrite=True)
    assert third == first and sorted(p.name for p in out.iterdir()) == ["x-2.wav", "x.wav"]
    assert sf.read(third)[0].max() == pytest.approx(0.2, abs=1e-3)


def test_mono_and_empty_input(tmp_path):
    path, _ = write_audio(tone(channels=1)[:, 0], RATE, tmp_path / "mono.flac", audio_format(".flac"))
    assert sf.info(path).channels == 1
    with pytest.raises(OutputError, match="shape"):
        write_audio(np.zeros((0, 2)), RATE, tmp_path / "empty.wav")
    assert not list(tmp_path.glob("empty*"))


def test_the_longest_clip_writes_as_ogg_without_crashing(tmp_path):
    """47.55 s of 44.1 kHz stereo in one libvorbis write overflows its stack; the writer writes in chunks."""
    import subprocess
    import sys

    script = (
        "import sys, numpy as np, soundfile as sf\n"
        "from pathlib import Path\n"
        "from stablekit.writers.audio import audio_format, write_audio\n"
        "data = np.random.default_rng(0).uniform(-0.5, 0.5, (round(47.55 * 44100), 2)).astype(np.float32)\n"
        "path, _ = write_audio(data, 44100, Path(sys.argv[1]), audio_format('.ogg'))\n"
        "print(sf.info(path).frames)\n"
    )
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path / "long.ogg")], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert int(result.stdout) == round(47.55 * 44100)
