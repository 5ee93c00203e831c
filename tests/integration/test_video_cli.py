"""`stablekit video` end to end on tiny-svd (32x32, 4 frames by default), through the CLI in-process; the README
command in a real process, whose stderr also shows what libraries print on import.

SVD is slow even tiny, so the generating runs are made once per module (`runs`) and each test reads what it
needs from them: 3 frames at 9 fps (not the model's 4 at 7) so the files show the request was honoured.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import imageio.v2 as iio2
import imageio.v3 as iio
import numpy as np
import pytest
from PIL import Image

from conftest import ROOT, run_cli, run_process
from stablekit.writers.video import read_comment

FRAMES, FPS, SEED, SIZE = 3, 9, 5, (32, 32)
REQUEST = ["--model", "tiny-svd", "--frames", str(FRAMES), "--fps", str(FPS), "--seed", str(SEED), "--json"]
LIBRARY_NOISE = ("Warning", "warn", "Traceback", "it/s]", "IMAGEIO", "torchvision", "deprecated")


def records_of(result) -> list[dict]:
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def sidecar(path) -> dict:
    return json.loads(Path(f"{path}.json").read_text())


def assert_only_stablekit_on_stderr(result) -> None:
    for noise in LIBRARY_NOISE:
        assert noise not in result.stderr, result.stderr


def png_frames(folder: Path) -> np.ndarray:
    return np.stack([np.asarray(Image.open(path).convert("RGB")) for path in sorted(folder.glob("frame-*.png"))])


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_cache):
    """Every generating run of this module, made once: name -> (result, output folder, working folder)."""
    base = tmp_path_factory.mktemp("video")
    home = base / "home"
    home.mkdir()
    (home / "tiny").symlink_to(tiny_cache, target_is_directory=True)
    env = {"STABLEKIT_HOME": str(home), "HF_HOME": str(base / "hf"), "HF_HUB_OFFLINE": "1", "NO_COLOR": "1",
           "STABLEKIT_DEBUG": ""}
    picture = base / "boat.png"
    Image.new("RGB", (80, 50), (20, 90, 200)).save(picture)  # wider than the video: cropped at the sides
    readme = (ROOT / "README.md").read_text()
    offline, from_prompt = [line for line in readme.splitlines() if line.endswith("--model tiny-svd")][:2]
    image = ["--image", str(picture)]
    plans = {
        "mp4": ["video", *image, *REQUEST, "-o", "clip.mp4"],
        "gif": ["video", *image, *REQUEST, "-o", "clip.gif"],
        "webp": ["video", "a boat", "--image-model", "tiny-sd", *REQUEST, "-o", "boat.webp"],
        "frames": ["video", *image, *REQUEST, "-o", "shots/"],
        "failed": ["video", *image, *REQUEST, "-o", "failed.mp4"],
        "kept": ["video", "a boat", "--image-model", "tiny-sd", "--keep-image", *REQUEST, "--width", "40",
                 "--height", "24", "-o", "kept.mp4"],
        "readme": shlex.split(offline)[1:],
        "readme-prompt": shlex.split(from_prompt)[1:],
    }
    made = {}
    for name, args in plans.items():
        out = base / name
        out.mkdir()
        extra = {"IMAGEIO_FFMPEG_EXE": "/bin/false"} if name == "failed" else {}
        if name == "readme":
            (out / "boat.png").write_bytes(picture.read_bytes())
            result = run_process(*args, env=env, cwd=out)
        else:
            result = run_cli(*args, "-d", str(out), env={**env, **extra}, cwd=base)
        made[name] = (result, out)
    return made


def test_mp4_decodes_to_the_requested_frames_size_and_fps_with_its_provenance(runs):
    result, out = runs["mp4"]
    (record,) = records_of(result)
    path = Path(record["path"])
    assert path == out / "clip.mp4" and record["kind"] == "video" and record["seed"] == SEED
    assert (record["frames"], record["fps"], record["width"], record["height"]) == (FRAMES, FPS, *SIZE)
    reader = iio2.get_reader(path)
    meta = reader.get_meta_data()
    assert reader.count_frames() == FRAMES and meta["size"] == SIZE and meta["fps"] == FPS
    assert meta["codec"] == "h264" and meta["pix_fmt"].startswith("yuv420p")
    reader.close()
    embedded = json.loads(read_comment(path))
    assert (embedded["seed"], embedded["num_frames"], embedded["fps"], embedded["model"]) == (SEED, FRAMES, FPS,
                                                                                              "tiny-svd")
    record_ = sidecar(path)
    assert record_["parameters"] == embedded and record_["output"] == "clip.mp4"
    assert record_["device_plan"]["decode_chunk_size"] == embedded["decode_chunk_size"] == FRAMES
    assert embedded["input_rule"] == "input 80x50 scaled to cover 32x32 and centre-cropped"
    assert "input 80x50 scaled to cover 32x32 and centre-cropped" in result.stderr, "the rule that fired is logged"
    assert re.search(r"video 3 frames 32x32 \(2 steps\)", result.stderr)
    assert re.search(r"decode 3 frames \(1 step\)", result.stderr)


def test_gif_decodes_to_the_requested_frames_size_and_fps(runs):
    result, out = runs["gif"]
    (record,) = records_of(result)
    path = Path(record["path"])
    assert path == out / "clip.gif"
    data = iio.imread(path, index=None)
    assert data.shape == (FRAMES, SIZE[1], SIZE[0], 3)
    durations = [iio.immeta(path, index=i)["duration"] for i in range(FRAMES)]
    assert sum(durations) == round(FRAMES * 1000 / FPS, -1) and all(abs(d - 1000 / FPS) <= 10 for d in durations)
    assert json.loads(read_comment(path))["seed"] == SEED and sidecar(path)["parameters"]["format"] == "gif"


def test_text_to_webp_decodes_to_the_requested_frames_size_and_fps(runs):
    result, out = runs["webp"]
    (record,) = records_of(result)  # the drawn first frame is temporary: not reported, not kept
    path = Path(record["path"])
    assert path == out / "boat.webp"
    assert sorted(p.name for p in out.iterdir()) == ["boat.webp", "boat.webp.json"]
    assert iio.imread(path, index=...).shape == (FRAMES, SIZE[1], SIZE[0], 3)
    with Image.open(path) as image:
        durations = []
        for i in range(image.n_frames):
            image.seek(i)
            image.load()
            durations.append(image.info["duration"])
    assert len(durations) == FRAMES and sum(durations) == round(FRAMES * 1000 / FPS)
    params = sidecar(path)["parameters"]
    assert params["image_parameters"]["model"] == "tiny-sd" and params["image_parameters"]["seed"] == SEED
    assert params["image_parameters"]["kept"] is None and params["prompt"] == "a boat"
    assert "Drawing the first frame with tiny-sd" in result.stderr
    assert_only_stablekit_on_stderr(result)


def test_a_frames_folder_has_that_many_pngs(runs):
    result, out = runs["frames"]
    (record,) = records_of(result)
    folder = Path(record["path"])
    assert folder == out / "shots" and record["kind"] == "frames"
    assert sorted(p.name for p in folder.iterdir()) == ["frame-0000.png", "frame-0001.png", "frame-0002.png"]
    assert png_frames(folder).shape == (FRAMES, SIZE[1], SIZE[0], 3)
    assert sidecar(folder)["parameters"]["format"] == "frames" and (out / "shots.json").is_file()
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == [], "no temporary folder left"


def test_the_same_seed_gives_identical_frames(runs):
    """The frames kept after a failed encode were rendered separately with the same seed: they match."""
    frames = png_frames(runs["frames"][1] / "shots")
    kept = png_frames(runs["failed"][1] / "failed-frames")
    assert np.array_equal(frames, kept)
    assert frames.std() > 0 and not np.array_equal(frames[0], frames[-1]), "frames of noise, not blank ones"
    mp4 = np.stack(list(iio2.mimread(runs["mp4"][1] / "clip.mp4"))).astype(int)
    assert np.abs(mp4 - frames).mean() < 12, "the MP4 shows those frames (H.264 is lossy)"


def test_when_encoding_fails_the_frames_are_kept_and_the_command_fails(runs):
    result, out = runs["failed"]
    assert result.returncode == 1
    assert "Error: cannot write failed.mp4: ffmpeg failed" in result.stderr
    assert f"the 3 frames are kept in {out / 'failed-frames'}" in result.stderr
    (record,) = [json.loads(line) for line in result.stdout.splitlines()]
    assert record["path"] == str(out / "failed-frames") and record["kind"] == "frames"
    params = sidecar(out / "failed-frames")["parameters"]
    assert params["format"] == "frames" and params["requested_format"] == "mp4"
    assert sorted(p.name for p in out.iterdir()) == ["failed-frames", "failed-frames.json"], "no partial MP4"


def test_text_to_video_keeps_the_drawn_frame_at_an_exact_size(runs):
    """40x24 is not a multiple of 16: the MP4 keeps it exactly, and the kept first frame has it too."""
    result, out = runs["kept"]
    image_record, video_record = records_of(result)
    assert image_record["kind"] == "image" and image_record["path"] == str(out / "kept.png")
    assert Image.open(out / "kept.png").size == (40, 24) and sidecar(out / "kept.png")["parameters"]["seed"] == SEED
    reader = iio2.get_reader(video_record["path"])
    assert reader.get_meta_data()["size"] == (40, 24) and reader.count_frames() == FRAMES
    reader.close()
    params = sidecar(video_record["path"])["parameters"]
    assert params["image_parameters"]["kept"] == str(out / "kept.png")
    assert params["input_rule"] == "first frame drawn by tiny-sd at 40x24"


def test_readme_offline_command_draws_prints_and_records_a_seed(runs):
    result, out = runs["readme"]
    assert result.returncode == 0, result.stderr
    assert_only_stablekit_on_stderr(result)
    seed = int(re.search(r"seed (\d+) \(drawn", result.stderr).group(1))
    written = out / result.stdout.strip()
    assert written.name == f"boat-{seed}.mp4" and sidecar(written)["parameters"]["seed"] == seed
    reader = iio2.get_reader(written)
    assert reader.count_frames() == 4 and reader.get_meta_data()["fps"] == 7, "the model's defaults"
    reader.close()


def test_readme_offline_prompt_draws_its_first_frame_with_a_tiny_model(runs):
    """Text to video with tiny-svd needs no download: its first frame comes from tiny-sdxl, not sdxl-turbo."""
    result, out = runs["readme-prompt"]
    assert result.returncode == 0, result.stderr
    [written] = out.glob("*.mp4")
    assert result.stdout.strip().endswith(written.name)
    params = sidecar(written)["parameters"]
    assert params["image_model"] == "tiny-sdxl" and params["input_rule"] == "first frame drawn by tiny-sdxl at 32x32"
    reader = iio2.get_reader(written)
    assert reader.count_frames() == 4 and reader.get_meta_data()["size"] == (32, 32)
    reader.close()


def one_line_error(result, *needles: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    errors = [i for i, line in enumerate(lines) if line.startswith("Error: ")]
    assert len(errors) == 1 and len(lines) - errors[0] <= 2, result.stderr  # Error, then at most a Hint
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in result.stderr, result.stderr


@pytest.fixture
def picture(tmp_path) -> Path:
    path = tmp_path / "in.png"
    Image.new("RGB", (32, 32), (200, 30, 30)).save(path)
    return path


@pytest.mark.parametrize(("args", "needles"), [
    (["--image", "missing.png"], ["--image missing.png: no such file"]),
    (["--image", "broken.png"], ["--image broken.png: not a readable image"]),
    (["--frames", "0"], ["--frames 0: must be at least 1"]),
    (["--frames", "-2"], ["--frames -2: must be at least 1"]),
    (["--fps", "0"], ["--fps 0: must be at least 1"]),
    (["--fps", "-7"], ["--fps -7: must be at least 1"]),
    (["--width", "30"], ["--width 30: must be a positive multiple of 8 for tiny-svd"]),
    (["--height", "-8"], ["--height -8"]),
    (["--decode-chunk", "0"], ["--decode-chunk 0"]),
    (["-o", "clip.avi"], ["'.avi'", ".mp4, .gif, .webp"]),
    (["-o", "clip.gif", "--fps", "60"], ["--fps 60: GIF plays at most 50 fps"]),
    (["a boat"], ["give a prompt or --image, not both"]),
    (["--keep-image"], ["--keep-image keeps the frame drawn from a prompt"]),
    (["--model", "tiny-sd"], ["tiny-sd"]),
])
def test_bad_input_is_one_line_exit_2_and_nothing_written(tmp_path, picture, args, needles):
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    image = [] if "--image" in args else ["--image", str(picture)]
    result = run_cli("video", *image, "--model", "tiny-svd", *args, "-d", str(tmp_path / "out"), cwd=tmp_path)
    one_line_error(result, *needles)
    assert not (tmp_path / "out").exists()
    assert result.stdout == ""


def test_no_input_at_all_says_what_to_give(tmp_path):
    result = run_cli("video", "--model", "tiny-svd", "-d", str(tmp_path / "out"))
    one_line_error(result, "missing the input: an image or a prompt", "stablekit video --image")


def test_dry_run_shows_the_decode_chunk_and_loads_nothing(tmp_path, picture):
    result = run_cli("video", "--image", str(picture), "--model", "svd-xt", "--dry-run", "--vram", "24")
    assert result.returncode == 0, result.stderr
    assert re.search(r"plan +cpu · float32 · offload none · decode chunk \d+", result.stdout)
    assert "workload  1024x576, 25 frames" in result.stdout and "files: missing" in result.stdout
    text = run_cli("video", "a boat", "--model", "svd-xt", "--image-model", "tiny-sd", "--dry-run", "--json",
                   "--vram", "24")
    image_plan, video_plan = records_of(text)
    assert image_plan["model"] == "tiny-sd" and image_plan["workload"] == "1024x576"
    assert video_plan["model"] == "svd-xt" and 1 <= video_plan["plan"]["decode_chunk_size"] < 25
    assert video_plan["request"]["num_frames"] == 25 and not list(tmp_path.glob("*.mp4"))
