"""`stablekit info` reads the record back from every format stablekit writes (through the real writers), from
AUTOMATIC1111 files written the way A1111 writes them, and from ComfyUI PNGs; a file without one exits 1."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from conftest import run_cli
from stablekit.jobs import job_from

A1111_TEXT = ('a lighthouse at dusk, (oil painting:1.2)\nsecond prompt line\nNegative prompt: blurry, low quality\n'
              'Steps: 25, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 6.5, Seed: 1234, Size: 512x768, '
              'Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Clip skip: 2, Version: v1.10.1')


def job_values(command: str, **values) -> dict:
    models = {"image": "tiny-sd", "video": "tiny-svd", "audio": "tiny-audio", "mesh": "tiny-triposr", "text": "tiny-lm"}
    return job_from(command, {"model": models[command], **values}).to_dict()


def embedded(job: dict, **details) -> dict:
    """What an engine embeds: the job object plus details it adds."""
    return {**job, **details, "stablekit_version": "0.1.0"}


def info_json(path: Path) -> dict:
    result = run_cli("info", "--json", str(path))
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".webp"])
def test_images_give_back_the_job_that_made_them(tmp_path, suffix):
    from stablekit.writers.image import write_image

    job = job_values("image", prompt="a cat, at night: 2", seed=9, num_inference_steps=3, scheduler="euler",
                     output=f"cat{suffix}")
    path = write_image(Image.new("RGB", (64, 64), "red"), tmp_path / f"cat{suffix}",
                       embedded(job, index=0, sampler="Euler", loras=[]))
    assert info_json(path) == job
    shown = run_cli("info", str(path)).stdout
    assert "image by tiny-sd" in shown and "prompt: a cat, at night: 2" in shown and "seed: 9" in shown


def test_a_later_image_of_a_job_gives_back_the_whole_job(tmp_path):
    """Output 2 of 3 records its own seed; the job that made it started two seeds earlier."""
    from stablekit.writers.image import write_image
    from stablekit.writers.sidecar import write_sidecar

    job = job_values("image", prompt="fox", seed=7, num_images=3)
    path = write_image(Image.new("RGB", (8, 8)), tmp_path / "fox-2.png", None)
    write_sidecar(path, {"output": path.name, "parameters": {**job, "seed": 9, "index": 2, "command": "image"}})
    assert info_json(path) == job


@pytest.mark.parametrize("suffix", [".mp4", ".gif", ".webp", ""])
def test_videos_and_frame_folders(tmp_path, suffix):
    from stablekit.writers.video import write_video

    job = job_values("video", image="boat.png", seed=5, num_frames=3, output=f"boat{suffix}")
    frames = np.zeros((3, 16, 16, 3), dtype=np.uint8)
    video = write_video(frames, 7, tmp_path / f"boat{suffix}", comment=json.dumps(embedded(job, format="x")))
    assert info_json(video.path) == job


@pytest.mark.parametrize("suffix", [".wav", ".flac", ".ogg"])
def test_audio_tags(tmp_path, suffix):
    from stablekit.writers.audio import audio_format, write_audio

    job = job_values("audio", prompt="rain", seed=3, num_waveforms_per_prompt=2, output=f"rain{suffix}")
    samples = np.zeros((800, 2), dtype=np.float32)
    path, _ = write_audio(samples, 8000, tmp_path / f"rain{suffix}", audio_format(suffix),
                          tags={"comment": json.dumps(embedded({**job, "seed": 4}, index=1))})
    assert info_json(path) == job  # the second waveform (seed 4) came from the job with seed 3


@pytest.mark.parametrize("suffix", [".glb", ".obj", ".ply", ".stl"])
def test_meshes_embedded_in_glb_and_from_the_sidecar_otherwise(tmp_path, suffix):
    import trimesh

    from stablekit.writers.mesh import write_mesh
    from stablekit.writers.sidecar import write_sidecar

    job = job_values("mesh", image="chair.png", output=f"chair{suffix}")
    path = write_mesh(trimesh.creation.box(), tmp_path / f"chair{suffix}", embedded(job))
    if suffix != ".glb":
        assert run_cli("info", str(path)).returncode == 1  # no sidecar yet: nothing to read
        write_sidecar(path, {"output": path.name, "parameters": {**job, "command": "mesh"}})
    assert info_json(path) == job


def test_text_from_its_sidecar(tmp_path):
    from stablekit.writers.sidecar import write_sidecar

    job = job_values("text", prompt="Hello", temperature=0.0, max_new_tokens=8, output="hello.txt")
    path = tmp_path / "hello.txt"
    path.write_text("Hello there")
    write_sidecar(path, {"output": path.name, "parameters": {**job, "finish_reason": "length"}})
    assert info_json(path) == job
    assert "text by tiny-lm (read from sidecar hello.txt.json)" in run_cli("info", str(path)).stdout


def test_a1111_png_maps_what_it_can_and_lists_the_rest(tmp_path):
    info = PngInfo()
    info.add_text("parameters", A1111_TEXT)  # what A1111 itself does (modules/images.py, save_image_with_geninfo)
    Image.new("RGB", (8, 8)).save(tmp_path / "a1111.png", pnginfo=info)
    result = run_cli("info", "--json", str(tmp_path / "a1111.png"))
    assert result.returncode == 0, result.stderr
    job = json.loads(result.stdout)
    assert job["prompt"] == "a lighthouse at dusk, (oil painting:1.2)\nsecond prompt line"
    assert (job["negative_prompt"], job["num_inference_steps"], job["scheduler"]) == ("blurry, low quality", 25,
                                                                                      "dpm++2m-karras")
    assert (job["guidance_scale"], job["seed"], job["width"], job["height"]) == (6.5, 1234, 512, 768)
    for unmapped in ("Model hash: 6ce0161689", "Model: v1-5-pruned-emaonly", "Clip skip: 2"):
        assert unmapped in result.stderr
    shown = run_cli("info", str(tmp_path / "a1111.png")).stdout
    assert "AUTOMATIC1111 parameters (read from PNG text chunk 'parameters')" in shown and "Seed: 1234" in shown


def test_a1111_jpeg_user_comment(tmp_path):
    import piexif
    import piexif.helper

    # A1111's JPEG path: piexif, UserComment as "unicode" (modules/images.py).
    exif = piexif.dump({"Exif": {piexif.ExifIFD.UserComment: piexif.helper.UserComment.dump(A1111_TEXT,
                                                                                           encoding="unicode")}})
    Image.new("RGB", (8, 8)).save(tmp_path / "a1111.jpg", exif=exif)
    job = info_json(tmp_path / "a1111.jpg")
    assert (job["seed"], job["scheduler"], job["negative_prompt"]) == (1234, "dpm++2m-karras", "blurry, low quality")


def test_comfyui_graphs_are_shown_not_turned_into_jobs(tmp_path):
    prompt = {"3": {"class_type": "KSampler", "inputs": {"seed": 42, "steps": 20, "cfg": 8.0, "model": ["4", 0]}},
              "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a castle", "clip": ["4", 1]}}}
    info = PngInfo()
    info.add_text("prompt", json.dumps(prompt))
    info.add_text("workflow", json.dumps({"nodes": [{"type": "KSampler"}, {"type": "CLIPTextEncode"}]}))
    Image.new("RGB", (8, 8)).save(tmp_path / "comfy.png", pnginfo=info)
    shown = run_cli("info", str(tmp_path / "comfy.png"))
    assert shown.returncode == 0
    assert "ComfyUI prompt chunk (2 nodes: KSampler, CLIPTextEncode" in shown.stdout
    assert '"seed": 42' in shown.stdout and '"text": "a castle"' in shown.stdout
    as_json = run_cli("info", "--json", str(tmp_path / "comfy.png"))
    assert as_json.returncode == 1 and "ComfyUI" in as_json.stderr


def test_a_file_without_a_record_exits_1_after_the_others_are_shown(tmp_path):
    plain = tmp_path / "plain.png"
    Image.new("RGB", (8, 8)).save(plain)
    alone = run_cli("info", str(plain))
    assert alone.returncode == 1 and alone.stdout == ""
    assert "plain.png: no generation record" in alone.stderr and "Traceback" not in alone.stderr
    info = PngInfo()
    info.add_text("parameters", A1111_TEXT)
    Image.new("RGB", (8, 8)).save(tmp_path / "a1111.png", pnginfo=info)
    both = run_cli("info", str(plain), str(tmp_path / "a1111.png"), str(tmp_path / "gone.png"))
    assert both.returncode == 1 and "Seed: 1234" in both.stdout
    assert "plain.png: no generation record" in both.stderr and "gone.png: no such file" in both.stderr
    assert "2 of 3 files have no record" in both.stderr
