"""Tiny models build deterministically in the hub layouts and load through the ordinary diffusers/transformers code."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from stablekit.testing import tiny

PACKAGE_PARENT = Path(tiny.__file__).resolve().parent.parent

# Library noise while loading and sampling (not building), listed in the offline-models notes.
pytestmark = [
    pytest.mark.filterwarnings(r"ignore:Should have:UserWarning:torchsde\..*"),
    pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:`torch.nn.utils.weight_norm` is deprecated:FutureWarning"),
]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Each kind built once for this module (builds are read-only once made)."""
    root = tmp_path_factory.mktemp("tiny-built")
    folders: dict[str, Path] = {}

    def get(kind: str) -> Path:
        if kind not in folders:
            folders[kind] = tiny.build(kind, root / kind)
        return folders[kind]

    return get


def _pipeline(folder: Path):
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(folder, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _generator():
    import torch

    return torch.Generator("cpu").manual_seed(0)


@pytest.fixture
def area(tmp_path) -> Path:
    """An empty folder of our own (conftest puts the test's home inside tmp_path)."""
    path = tmp_path / "area"
    path.mkdir()
    return path


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _env() -> dict[str, str]:
    """The environment for a fresh interpreter that imports this checkout's stablekit."""
    path = os.pathsep.join(filter(None, [str(PACKAGE_PARENT), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path}


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(), timeout=120)


@pytest.mark.parametrize(
    ("kind", "pipeline", "scheduler", "kwargs"),
    [
        ("sd", "StableDiffusionPipeline", "PNDMScheduler", {}),
        ("sdxl", "StableDiffusionXLPipeline", "EulerDiscreteScheduler", {}),
        (
            "sd3",
            "StableDiffusion3Pipeline",
            "FlowMatchEulerDiscreteScheduler",
            {"max_sequence_length": tiny.T5_MAX_LENGTH},
        ),
    ],
)
def test_image_kinds_generate_at_native_size(built, kind, pipeline, scheduler, kwargs):
    folder = built(kind)
    assert json.loads((folder / "model_index.json").read_text())["_class_name"] == pipeline
    # The SD repos ship CLIP tokenizers as vocab.json + merges.txt; that path must keep loading.
    assert {p.name for p in (folder / "tokenizer").iterdir()} >= {"vocab.json", "merges.txt"}
    assert not (folder / "tokenizer" / "tokenizer.json").exists()

    pipe = _pipeline(folder)
    assert type(pipe).__name__ == pipeline
    assert type(pipe.scheduler).__name__ == scheduler
    assert pipe.tokenizer.model_max_length == tiny.CLIP_MAX_LENGTH
    assert pipe.text_encoder.config.vocab_size >= len(pipe.tokenizer)

    image = pipe("a red cat", num_inference_steps=2, generator=_generator(), **kwargs).images[0]
    assert image.size == (64, 64)
    assert image.mode == "RGB"


def test_sd_has_no_safety_checker_and_sd15_schedule(built):
    pipe = _pipeline(built("sd"))
    assert pipe.safety_checker is None and pipe.feature_extractor is None
    config = pipe.scheduler.config
    assert (config.beta_start, config.beta_end, config.beta_schedule) == (0.00085, 0.012, "scaled_linear")
    assert config.skip_prk_steps and config.steps_offset == 1


def test_sdxl_vae_upcasts_like_the_real_one(built):
    pipe = _pipeline(built("sdxl"))
    assert pipe.vae.config.force_upcast is True
    assert type(pipe.text_encoder_2).__name__ == "CLIPTextModelWithProjection"


def test_sd3_has_t5_and_shift_3(built):
    pipe = _pipeline(built("sd3"))
    assert pipe.scheduler.config.shift == 3.0
    assert type(pipe.text_encoder_3).__name__ == "T5EncoderModel"
    assert pipe.tokenizer_3.model_max_length == tiny.T5_MAX_LENGTH
    assert pipe.text_encoder_3.config.vocab_size >= len(pipe.tokenizer_3)


def test_svd_generates_frames(built):
    from PIL import Image

    pipe = _pipeline(built("svd"))
    assert pipe.unet.config.num_frames == 4
    # SVD's __call__ defaults to 576x1024 whatever the UNet's sample_size: the size must be passed.
    frames = pipe(
        Image.new("RGB", (32, 32), "red"),
        height=32,
        width=32,
        num_frames=2,
        decode_chunk_size=2,
        num_inference_steps=2,
        generator=_generator(),
    ).frames[0]
    assert len(frames) == 2
    assert all(frame.size == (32, 32) for frame in frames)


def test_audio_generates_stereo_clip(built):
    pipe = _pipeline(built("audio"))
    rate = pipe.vae.sampling_rate
    assert rate == 8000
    max_seconds = pipe.transformer.config.sample_size * pipe.vae.hop_length / rate
    assert max_seconds == 1.0
    assert pipe.tokenizer.model_max_length == tiny.T5_MAX_LENGTH

    audio = pipe("rain on a roof", audio_end_in_s=0.5, num_inference_steps=2, generator=_generator()).audios
    assert tuple(audio.shape) == (1, 2, rate // 2)


def test_lm_chats_and_generates(built):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = built("lm")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    assert type(model).__name__ == "StableLmForCausalLM"
    assert model.config.max_position_embeddings == tokenizer.model_max_length == tiny.LM_CONTEXT
    assert model.config.vocab_size >= len(tokenizer)

    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi there"}], add_generation_prompt=True, tokenize=False
    )
    assert prompt == "<|user|>\nHi there<|endoftext|>\n<|assistant|>\n"
    inputs = tokenizer(prompt, return_tensors="pt")
    out = model.generate(**inputs, max_new_tokens=4, min_new_tokens=4, do_sample=False)
    assert out.shape == (1, inputs["input_ids"].shape[1] + 4)
    assert isinstance(tokenizer.decode(out[0]), str)


@pytest.mark.parametrize("kind", tiny.TINY_KINDS)
def test_builds_are_byte_identical(built, tmp_path, kind):
    first = _files(built(kind))
    second = _files(tiny.build(kind, tmp_path / kind))
    assert any(name.endswith(".safetensors") for name in first)
    assert first.keys() == second.keys()
    assert [name for name in first if first[name] != second[name]] == []


def test_ensure_keeps_a_complete_build(area):
    folder = tiny.ensure("lm", area / "lm")
    assert tiny.is_complete("lm", folder)
    stamps = {p: p.stat().st_mtime_ns for p in folder.iterdir()}
    assert tiny.ensure("lm", folder) == folder
    assert {p: p.stat().st_mtime_ns for p in folder.iterdir()} == stamps
    assert not [p for p in area.iterdir() if p.name.startswith(".")], "temporary folders left behind"


def test_ensure_survives_a_race(area):
    folder = area / "lm"
    code = f"from stablekit.testing import tiny; print(tiny.ensure('lm', {str(folder)!r}))"
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env()
        )
        for _ in range(2)
    ]
    results = [racer.communicate(timeout=120) + (racer.returncode,) for racer in racers]
    assert [r[2] for r in results] == [0, 0], results
    assert [r[0].strip() for r in results] == [str(folder)] * 2
    assert tiny.is_complete("lm", folder)
    assert [p.name for p in area.iterdir()] == ["lm"]


def test_ensure_loser_keeps_the_winners_build(area, monkeypatch):
    """The other process renames its build in while this one is still building: this one's copy is dropped."""
    folder = area / "lm"
    build_temp = tiny._build_temp
    winners = []

    def other_process_wins(kind, target):
        monkeypatch.setattr(tiny, "_build_temp", build_temp)  # only this first call races
        tmp = build_temp(kind, target)
        winners.append(tiny.build(kind, target).stat().st_ino)
        return tmp

    monkeypatch.setattr(tiny, "_build_temp", other_process_wins)
    assert tiny.ensure("lm", folder) == folder
    assert folder.stat().st_ino == winners[0]
    assert tiny.is_complete("lm", folder)
    assert [p.name for p in area.iterdir()] == ["lm"]


def test_ensure_rebuilds_an_incomplete_folder(area):
    folder = area / "lm"
    folder.mkdir()
    (folder / "stray.txt").write_text("half a download")
    (folder / tiny.MARKER).write_text(json.dumps({"kind": "lm", "format": -1}))
    tiny.ensure("lm", folder)
    assert tiny.is_complete("lm", folder)
    assert not (folder / "stray.txt").exists()
    assert not tiny.is_complete("sd", folder)


def test_build_replaces_an_existing_folder(area):
    folder = tiny.build("lm", area / "model")
    (folder / "stray.txt").write_text("old")
    tiny.build("lm", folder)
    assert not (folder / "stray.txt").exists()
    assert tiny.is_complete("lm", folder)
    assert [p.name for p in area.iterdir()] == ["model"]


@pytest.mark.parametrize("function", [tiny.build, tiny.ensure])
def test_unknown_kind_is_a_value_error(area, function):
    with pytest.raises(ValueError, match="unknown tiny model kind 'sd4'"):
        function("sd4", area / "x")
    assert list(area.iterdir()) == []


def test_import_is_cheap():
    result = _python(
        "import sys, stablekit.testing.tiny; print(sorted(m for m in ('torch', 'diffusers', 'transformers',"
        " 'tokenizers') if m in sys.modules))"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_building_prints_nothing(area):
    result = _python(
        "import sys; from stablekit.testing import tiny\n"
        f"for kind in tiny.TINY_KINDS: tiny.build(kind, {str(area)!r} + '/' + kind)\n"
    )
    assert result.returncode == 0, result.stderr
    assert (result.stdout, result.stderr) == ("", "")


# --- any hub model, read from its own files ---------------------------------------------------------------

# kind -> the command that renders it (with small settings) and what `models info` must have found.
HUB_RENDERS = {
    "sdxl": (["image", "a red cat", "--steps", "1"], "diffusers StableDiffusionXLPipeline, planned like sdxl"),
    "sd3": (["image", "a red cat", "--steps", "1"], "diffusers StableDiffusion3Pipeline, planned like sd3-medium"),
    "svd": (["video", "--image", "{image}", "--steps", "1", "--frames", "2"],
            "diffusers StableVideoDiffusionPipeline, planned like svd"),
    "audio": (["audio", "rain on a roof", "--steps", "1"],
              "diffusers StableAudioPipeline, planned like stable-audio-open"),
    "lm": (["text", "Hello", "--max-tokens", "3", "--min-tokens", "3"],
           "transformers StableLmForCausalLM, planned like stablelm-2-zephyr-1.6b"),
    "triposr": (["mesh", "--image", "{image}", "--no-remove-bg", "--resolution", "32"],
                "TripoSR config.yaml, planned like triposr"),
}


@pytest.fixture
def served(built, tmp_path, monkeypatch):
    """A fake hub serving each tiny layout as org/tiny-KIND, with the CLI pointed at it (and online)."""
    from fakehub import FakeHub

    with FakeHub() as hub:
        env = {"HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0"}
        yield lambda kind: hub.repos.setdefault(f"org/tiny-{kind}", built(kind)), env, hub


@pytest.mark.parametrize("kind", list(HUB_RENDERS))
def test_bare_hub_ids_of_every_layout_render(served, tmp_path, kind):
    """`--model ORG/NAME` of a repo in no catalog: its configs are fetched and read first, so family, loader,
    defaults (its own native size) and download patterns are its own, then it renders like any model."""
    from PIL import Image

    from conftest import run_cli

    serve, env, hub = served
    serve(kind)
    image = tmp_path / "in.png"
    Image.new("RGB", (64, 64), (200, 40, 40)).save(image)
    args, found = HUB_RENDERS[kind]
    args = [a.replace("{image}", str(image)) for a in args]

    info = run_cli("models", "info", f"org/tiny-{kind}", env=env)
    assert info.returncode == 0, info.stderr
    assert f"hub repository: {found}" in info.stdout and "origin      hub" in info.stdout
    assert "files       configs" in info.stdout  # only the configs so far: no weights fetched to find out

    out = tmp_path / "out"
    where = [] if kind == "lm" else ["-d", str(out)]
    made = run_cli(*args, "--model", f"org/tiny-{kind}", "--seed", "1", "-q", *where, env=env)
    assert made.returncode == 0, made.stderr
    assert made.stdout.strip(), made.stderr
    if kind != "lm":
        assert Path(made.stdout.strip().splitlines()[-1]).is_file()
    fetched = {line.split(" ", 1)[1] for line in hub.requests if line.startswith("GET /org/")}
    assert not [name for name in fetched if name.endswith((".bin", ".ckpt", ".pt"))]


def test_hub_sdxl_finetune_gets_sdxl_defaults_at_its_own_size(served):
    """The bug this replaces: a bare SDXL fine-tune id was planned as SD 1.5 and crashed in the UNet."""
    from stablekit.registry import load_registry

    serve, env, _ = served
    serve("sdxl")
    import os

    os.environ.update(env)
    try:
        import importlib

        import huggingface_hub.constants as constants

        importlib.reload(constants)
        spec = load_registry().resolve("org/tiny-sdxl", "image")
    finally:
        for key in env:
            os.environ.pop(key)
        importlib.reload(constants)
    assert (spec.family, spec.loader, spec.origin) == ("sdxl", "StableDiffusionXLPipeline", "hub")
    assert (spec.defaults["width"], spec.defaults["height"]) == (64, 64)  # 32 latents x the VAE's factor 2
    assert spec.defaults["num_inference_steps"] == 30 and spec.variant is None
    assert 0 < spec.memory.total_params < 1  # read from the safetensors headers on the hub, in millions
