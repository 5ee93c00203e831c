"""Embedded metadata as other programs read it: EXIF through Pillow and piexif (A1111's own EXIF library), the
A1111 `parameters` text through A1111's key/value regex, and sampler names in A1111's vocabulary."""

from __future__ import annotations

import io
import json
import re
import struct
from pathlib import Path

import numpy as np
import piexif
import piexif.helper
import pytest
from PIL import Image
from PIL.TiffImagePlugin import ImageFileDirectory_v2

from stablekit import schedulers
from stablekit.writers.image import A1111_PARAM, a1111_parameters, exif_block, read_parameters, write_image
from stablekit.writers.video import read_comment, write_video

# AUTOMATIC1111's infotext_utils.re_param_code, copied as written there: the test must not trust our copy.
A1111_RE_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')

# The sampler names A1111 (1.x) knows, plus the Karras forms its older infotexts use.
A1111_SAMPLERS = {"Euler", "Euler a", "Heun", "LMS", "DDIM", "PLMS", "DPM++ 2M", "DPM++ 2M SDE", "DPM++ SDE",
                  "DPM2", "DPM2 a", "UniPC", "LCM", "DPM++ 2M Karras", "DPM++ 2M SDE Karras", "DPM++ SDE Karras",
                  "LMS Karras", "DPM2 Karras", "DPM2 a Karras"}

PARAMS = {"prompt": "a lighthouse at dusk, oil on canvas", "negative_prompt": "blurry, text",
          "num_inference_steps": 4, "sampler": "Euler a", "guidance_scale": 7.5, "seed": 42, "width": 64,
          "height": 48, "model": "tiny-sd", "strength": 1.0, "stablekit_version": "0.1.0",
          "loras": [{"name": "film-grain", "scale": 0.8}, {"name": "ink", "scale": 0.5}]}


def parse_a1111(text: str) -> tuple[list[str], dict[str, str]]:
    """What A1111's parse_generation_parameters does with the last line: key/value pairs, quoted values unquoted."""
    *lines, last = text.strip().split("\n")
    pairs = A1111_RE_PARAM.findall(last)
    assert len(pairs) >= 3, "A1111 would read the parameters line as part of the prompt"
    values = {k: json.loads(v) if v[:1] == '"' and v[-1:] == '"' else v for k, v in pairs}
    return lines, values


def test_our_regex_is_a1111s():
    assert A1111_PARAM.pattern == A1111_RE_PARAM.pattern


def test_two_loras_parse_into_the_right_keys():
    lines, values = parse_a1111(a1111_parameters(PARAMS))
    assert lines == ["a lighthouse at dusk, oil on canvas", "Negative prompt: blurry, text"]
    assert list(values) == ["Steps", "Sampler", "CFG scale", "Seed", "Size", "Model", "Denoising strength", "Lora",
                            "Version"]
    assert values["Lora"] == "film-grain: 0.8, ink: 0.5"
    assert values["Sampler"] == "Euler a" and values["Seed"] == "42" and values["Size"] == "64x48"


@pytest.mark.parametrize("model", ['C:\\models\\my, "best" model.safetensors', "plain-name", 'say "hi"'])
def test_values_with_commas_colons_or_quotes_come_back_whole(model):
    _, values = parse_a1111(a1111_parameters({**PARAMS, "model": model, "loras": []}))
    assert values["Model"] == model and values["Version"] == "stablekit 0.1.0"


def test_refiner_runs_record_a1111s_refiner_fields():
    text = a1111_parameters({**PARAMS, "refiner_model": "sdxl-refiner", "denoising_split": 0.8})
    _, values = parse_a1111(text)
    assert values["Refiner"] == "sdxl-refiner" and values["Refiner switch at"] == "0.8"
    assert "Refiner" not in parse_a1111(a1111_parameters(PARAMS))[1]


def test_karras_samplers_write_a1111s_schedule_type():
    _, values = parse_a1111(a1111_parameters({**PARAMS, "sampler": "DPM++ 2M Karras"}))
    assert values["Sampler"] == "DPM++ 2M" and values["Schedule type"] == "Karras"


@pytest.mark.parametrize("old", ["PNDM", "FlowMatchEuler", "EulerAncestralDiscrete", "pndm"])
def test_diffusers_names_from_older_runs_are_written_in_a1111s_vocabulary(old):
    _, values = parse_a1111(a1111_parameters({**PARAMS, "sampler": old}))
    assert values["Sampler"] in A1111_SAMPLERS


class FakePipe:
    def __init__(self, scheduler):
        self.scheduler = scheduler


def _default_schedulers():
    """The schedulers the tiny (and real) models ship with, configured as their scheduler_config.json."""
    import diffusers

    ldm = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000)
    return {
        "sd-1.5 (PNDM)": diffusers.PNDMScheduler(**ldm, skip_prk_steps=True, steps_offset=1),
        "sdxl (Euler)": diffusers.EulerDiscreteScheduler(**ldm, steps_offset=1),
        "sdxl-turbo (Euler a, trailing)": diffusers.EulerAncestralDiscreteScheduler(**ldm,
                                                                                    timestep_spacing="trailing"),
        "sd-2.1 (DDIM)": diffusers.DDIMScheduler(**ldm, clip_sample=False, set_alpha_to_one=False),
        "sd3 (flow Euler)": diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0),
    }


@pytest.mark.parametrize("label", list(_default_schedulers()))
def test_the_default_scheduler_and_the_same_one_asked_for_get_the_same_name(label):
    """Same scheduler, same pixels: the name comes from the scheduler, not from whether --scheduler chose it."""
    default = _default_schedulers()[label]
    name = schedulers.apply(FakePipe(default), None)
    assert name in A1111_SAMPLERS and "PNDM" not in name and "Flow" not in name
    same = [n for n, s in schedulers.SAMPLERS.items() if s.cls == type(default).__name__ and not s.options]
    for choice in same:
        pipe = FakePipe(default)
        assert schedulers.apply(pipe, choice) == name, choice
        assert type(pipe.scheduler) is type(default)


@pytest.mark.parametrize("choice", list(schedulers.SAMPLERS))
def test_every_scheduler_choice_writes_an_a1111_name(choice):
    import diffusers

    flow = schedulers.SAMPLERS[choice].flow
    base = diffusers.FlowMatchEulerDiscreteScheduler() if flow else diffusers.PNDMScheduler()
    name = schedulers.apply(FakePipe(base), choice)
    assert name == schedulers.SAMPLERS[choice].a1111 and name in A1111_SAMPLERS


def _tiff_ifds(tiff: bytes) -> tuple[ImageFileDirectory_v2, ImageFileDirectory_v2]:
    """IFD0 and the Exif IFD with their declared types, read by Pillow's TIFF reader."""
    assert tiff[:4] in (b"MM\0*", b"II*\0")
    fp = io.BytesIO(tiff)
    ifd0 = ImageFileDirectory_v2(tiff[:8])
    fp.seek(ifd0.next)
    ifd0.load(fp)
    exif = ImageFileDirectory_v2(tiff[:8])
    fp.seek(ifd0[0x8769])
    exif.load(fp)
    return ifd0, exif


@pytest.mark.parametrize("suffix", [".jpg", ".webp"])
def test_jpeg_and_webp_exif_read_back_with_the_spec_types(tmp_path, suffix):
    path = write_image(Image.new("RGB", (64, 48), "navy"), tmp_path / f"out{suffix}", PARAMS)
    text = a1111_parameters(PARAMS)
    with Image.open(path) as image:
        exif = image.getexif()
        user_comment = exif.get_ifd(0x8769)[0x9286]
        raw = image.info["exif"]
        assert json.loads(exif[0x010E])["seed"] == 42 and exif[0x0131] == "stablekit 0.1.0"
    assert user_comment == b"UNICODE\0" + text.encode("utf-16-be")
    tiff = raw[6:] if raw.startswith(b"Exif\0\0") else raw
    ifd0, sub = _tiff_ifds(tiff)
    assert ifd0.tagtype[0x010E] == 2 and ifd0.tagtype[0x8769] == 4  # ASCII, LONG
    assert sub.tagtype[0x9286] == 7 and sub.tagtype[0x9000] == 7  # UserComment and ExifVersion: UNDEFINED
    assert (sub[0xA002], sub[0xA003]) == (64, 48)
    # piexif is what A1111 reads and writes EXIF with; its UserComment helper honours the character code.
    loaded = piexif.load(str(path))
    assert piexif.helper.UserComment.load(loaded["Exif"][piexif.ExifIFD.UserComment]) == text
    assert read_parameters(path) == text


def test_non_ascii_prompts_survive_in_exif(tmp_path):
    params = {**PARAMS, "prompt": "un phare au crépuscule, 灯台"}
    path = write_image(Image.new("RGB", (64, 48)), tmp_path / "out.jpg", params)
    assert read_parameters(path).split("\n")[0] == "un phare au crépuscule, 灯台"
    with Image.open(path) as image:
        assert json.loads(image.getexif()[0x010E])["prompt"] == params["prompt"]


def test_exif_block_is_word_aligned_and_has_no_dangling_offsets():
    tiff = exif_block(description="odd", comment="x" * 5, software="s", size=(3, 5))
    ifd0, sub = _tiff_ifds(tiff)
    count = struct.unpack(">H", tiff[8:10])[0]
    for i in range(count):
        _tag, kind, n, value = struct.unpack(">HHII", tiff[10 + 12 * i: 22 + 12 * i])
        size = {2: 1, 3: 2, 4: 4, 5: 8, 7: 1}[kind] * n
        if size > 4:
            assert value % 2 == 0 and value + size <= len(tiff)
    assert ifd0[0x010E] == "odd" and sub[0x9286] == b"UNICODE\0" + "xxxxx".encode("utf-16-be")


def _riff_chunks(data: bytes) -> dict[bytes, bytes]:
    assert data[:4] == b"RIFF" and data[8:12] == b"WEBP"
    chunks, at = {}, 12
    while at + 8 <= len(data):
        kind, size = data[at:at + 4], struct.unpack("<I", data[at + 4:at + 8])[0]
        chunks.setdefault(kind, data[at + 8:at + 8 + size])
        at += 8 + size + (size & 1)
    return chunks


def test_animated_webp_exif_chunk_starts_with_a_tiff_header(tmp_path):
    comment = json.dumps({"seed": 7, "prompt": "a boat"})
    frames = np.zeros((3, 16, 24, 3), dtype=np.uint8)
    frames[1], frames[2] = 120, 240  # different frames, or the encoder stores one still picture
    video = write_video(frames, 6, tmp_path / "clip.webp", comment=comment)
    chunks = _riff_chunks(Path(video.path).read_bytes())
    assert b"ANIM" in chunks
    assert chunks[b"EXIF"][:4] in (b"MM\0*", b"II*\0")
    ifd0, _ = _tiff_ifds(chunks[b"EXIF"])
    assert ifd0[0x010E] == comment and read_comment(video.path) == comment


def test_still_webp_exif_chunk_starts_with_a_tiff_header(tmp_path):
    path = write_image(Image.new("RGB", (64, 48)), tmp_path / "out.webp", PARAMS)
    assert _riff_chunks(path.read_bytes())[b"EXIF"][:4] == b"MM\0*"
