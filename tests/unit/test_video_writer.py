"""The video writer's rules without a model: formats, exact sizes, frame delays, provenance, safe writing."""

from __future__ import annotations

import json

import imageio.v2 as iio2
import imageio.v3 as iio
import numpy as np
import pytest
from PIL import Image

from stablekit.errors import OutputError
from stablekit.writers.video import (
    EncodingError,
    delays,
    format_of,
    frame_name,
    read_comment,
    write_video,
)

COMMENT = json.dumps({"seed": 7, "prompt": "a = b; # c \\ d"})


def frames(count: int = 5, height: int = 40, width: int = 56, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, height, width, 3), dtype=np.uint8)


def flat(count: int, height: int, width: int) -> np.ndarray:
    """Smooth frames (a gradient that shifts each frame) that a lossy codec keeps close."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([np.stack([(x * 4 + i * 20) % 256, (y * 4) % 256, np.full_like(x, 128)], axis=-1)
                     for i in range(count)]).astype(np.uint8)


def mp4_facts(path) -> tuple[int, tuple[int, int], float, str]:
    reader = iio2.get_reader(path)
    try:
        meta = reader.get_meta_data()
        return reader.count_frames(), meta["size"], meta["fps"], meta["pix_fmt"]
    finally:
        reader.close()


def written(folder) -> list[str]:
    """What a test wrote into its folder (the hermetic home lives there too)."""
    return sorted(p.name for p in folder.iterdir() if p.name != "stablekit-home")


def no_leftovers(folder) -> None:
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".") or "partial" in p.name]


@pytest.mark.parametrize(("name", "expected"), [
    ("a.mp4", "mp4"), ("a.MP4", "mp4"), ("a.gif", "gif"), ("a.webp", "webp"), ("a", "frames"), ("dir/shots", "frames"),
])
def test_the_extension_names_the_format(tmp_path, name, expected):
    assert format_of(tmp_path / name) == expected


def test_other_extensions_are_refused(tmp_path):
    with pytest.raises(OutputError, match="'.avi' is not a video format"):
        write_video(frames(), 7, tmp_path / "a.avi")
    assert written(tmp_path) == []


@pytest.mark.parametrize(("fps", "unit"), [(7, 100), (7, 1000), (6, 100), (24, 1000), (30, 100), (50, 100)])
def test_delays_add_up_to_the_clips_length(fps, unit):
    count = 25
    d = delays(count, fps, unit)
    assert len(d) == count and min(d) >= 1
    assert max(d) - min(d) <= 1, "never more than one unit apart"
    assert sum(d) == round(count * unit / fps)


def test_frame_names_sort_in_order():
    assert frame_name(0, 4) == "frame-0000.png" and frame_name(12345, 20000) == "frame-12345.png"
    assert frame_name(9, 10001) == "frame-00009.png"


@pytest.mark.parametrize(("height", "width"), [(40, 56), (24, 40), (576, 1024), (32, 32)])
def test_mp4_is_h264_yuv420p_at_the_exact_size_and_fps(tmp_path, height, width):
    """Sizes that are not multiples of 16 (40x56, 24x40, 1024x576 is one) are kept, never rescaled."""
    count = 3 if height > 100 else 5
    video = write_video(flat(count, height, width), 7, tmp_path / "a.mp4", comment=COMMENT)
    assert (video.path, video.format, video.frames, video.padded) == (tmp_path / "a.mp4", "mp4", count, None)
    assert mp4_facts(video.path) == (count, (width, height), 7.0, "yuv420p(tv, bt709, progressive)")
    decoded = np.stack(list(iio2.mimread(video.path)))
    assert decoded.shape == (count, height, width, 3)
    assert np.abs(decoded.astype(int) - flat(count, height, width)).mean() < 4, "colours survive the round trip"
    assert read_comment(video.path) == COMMENT
    no_leftovers(tmp_path)


def test_mp4_bytes_are_reproducible_and_never_clobbered(tmp_path):
    first = write_video(frames(), 7, tmp_path / "a.mp4")
    second = write_video(frames(), 7, tmp_path / "a.mp4")
    assert second.path.name == "a-2.mp4" and first.path.read_bytes() == second.path.read_bytes()
    third = write_video(frames(seed=1), 7, tmp_path / "a.mp4", overwrite=True)
    assert third.path == first.path and first.path.read_bytes() != second.path.read_bytes()


def test_an_odd_size_is_padded_with_its_edge_not_rescaled(tmp_path):
    data = flat(3, 33, 31)
    video = write_video(data, 10, tmp_path / "odd.mp4")
    assert video.padded == (1, 1) and (video.width, video.height) == (32, 34)
    count, size, fps, _ = mp4_facts(video.path)
    assert (count, size, fps) == (3, (32, 34), 10.0)
    decoded = np.stack(list(iio2.mimread(video.path))).astype(int)
    assert np.abs(decoded[:, :33, :31] - data).mean() < 4, "the picture is where it was, at its scale"
    assert np.abs(decoded[:, :, 31] - decoded[:, :, 30]).mean() < 4, "the new column repeats the edge"


def test_gif_loops_at_the_requested_rate_with_its_comment(tmp_path):
    video = write_video(frames(7), 7, tmp_path / "a.gif", comment=COMMENT)
    data = iio.imread(video.path, index=None)
    assert data.shape == (7, 40, 56, 3)
    durations = [iio.immeta(video.path, index=i)["duration"] for i in range(7)]
    assert sorted(set(durations)) == [140, 150] and sum(durations) == 1000, "7 frames at 7 fps last 1 s"
    assert iio.immeta(video.path, index=0)["loop"] == 0
    assert read_comment(video.path) == COMMENT


def test_gif_and_webp_merge_identical_frames_into_longer_ones(tmp_path):
    data = frames(4)
    data[2] = data[1]
    for name in ("a.gif", "a.webp"):
        path = write_video(data, 10, tmp_path / name).path
        with Image.open(path) as image:
            assert image.n_frames == 3, name
            durations = []
            for i in range(image.n_frames):
                image.seek(i)
                image.load()
                durations.append(image.info["duration"])
        assert durations == [100, 200, 100], name


def test_gif_refuses_frame_rates_players_cannot_show(tmp_path):
    with pytest.raises(OutputError, match="GIF plays at most 50 fps"):
        write_video(frames(), 60, tmp_path / "a.gif")
    assert written(tmp_path) == []


def test_webp_is_animated_at_the_requested_rate_with_its_comment(tmp_path):
    video = write_video(frames(5), 7, tmp_path / "a.webp", comment=COMMENT)
    data = iio.imread(video.path, index=...)
    assert data.shape == (5, 40, 56, 3)
    with Image.open(video.path) as image:
        durations = []
        for i in range(image.n_frames):
            image.seek(i)
            image.load()
            durations.append(image.info["duration"])
        assert image.info["loop"] == 0
    assert durations == [143, 143, 143, 142, 143]
    assert read_comment(video.path) == COMMENT


def test_a_frames_folder_holds_exact_numbered_pngs(tmp_path):
    data = frames(5)
    video = write_video(data, 7, tmp_path / "shots", comment=COMMENT)
    assert video.format == "frames" and video.path == tmp_path / "shots"
    names = sorted(p.name for p in video.path.iterdir())
    assert names == [f"frame-000{i}.png" for i in range(5)]
    for i, name in enumerate(names):
        with Image.open(video.path / name) as image:
            assert np.array_equal(np.asarray(image.convert("RGB")), data[i]), "PNG frames are lossless"
            assert image.text["stablekit"] == COMMENT and image.text["frame"] == f"{i}/5"
    no_leftovers(tmp_path)


def test_a_frames_folder_is_never_clobbered_and_overwrite_replaces_only_frames(tmp_path):
    first = write_video(frames(3), 7, tmp_path / "shots").path
    second = write_video(frames(2), 7, tmp_path / "shots").path
    assert second.name == "shots-2" and len(list(first.iterdir())) == 3
    replaced = write_video(frames(2), 7, tmp_path / "shots", overwrite=True).path
    assert replaced == first and len(list(first.iterdir())) == 2, "the old frames are gone, not mixed in"
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(OutputError, match="replaces a folder of frames only"):
        write_video(frames(2), 7, mine, overwrite=True)
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]
    no_leftovers(tmp_path)


def test_when_encoding_fails_the_frames_are_kept(tmp_path, monkeypatch):
    monkeypatch.setenv("IMAGEIO_FFMPEG_EXE", "/bin/false")
    data = frames(4)
    with pytest.raises(EncodingError) as err:
        write_video(data, 7, tmp_path / "clip.mp4", comment=COMMENT)
    kept = err.value.kept
    assert kept == tmp_path / "clip-frames" and "the 4 frames are kept in" in err.value.message
    assert sorted(p.name for p in kept.iterdir()) == [frame_name(i, 4) for i in range(4)]
    assert written(tmp_path) == ["clip-frames"], "no half-written clip.mp4"


@pytest.mark.parametrize("bad", [np.zeros((0, 8, 8, 3), np.uint8), np.zeros((2, 8, 8, 3), np.float32),
                                 np.zeros((2, 8, 8), np.uint8)])
def test_malformed_frames_are_refused(tmp_path, bad):
    with pytest.raises(OutputError, match="expected frames x height x width x 3"):
        write_video(bad, 7, tmp_path / "a.mp4")
    assert written(tmp_path) == []
