"""`stablekit image` beyond txt2img: img2img, inpainting, input rules, LoRA, refiner, prompt files, schedulers,
formats, and the fp16 NaN rescue."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from conftest import run_cli, run_process
from stablekit.writers.image import read_parameters


@pytest.fixture
def pictures(tmp_path) -> dict[str, Path]:
    folder = tmp_path / "inputs"
    folder.mkdir()
    base = Image.new("RGB", (64, 64), (40, 90, 160))
    ImageDraw.Draw(base).ellipse([10, 10, 50, 50], fill=(240, 200, 40))
    base.save(folder / "base.png")
    base.resize((100, 90)).save(folder / "odd.png")
    mask = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(mask).rectangle([16, 16, 48, 48], fill=255)
    mask.save(folder / "mask.png")
    mask.resize((32, 32)).save(folder / "small-mask.png")
    Image.new("I;16", (64, 64)).save(folder / "deep.png")
    (folder / "notes.png").write_text("not an image")
    return {p.stem: p for p in folder.iterdir()}


def run_ok(*args, **kw):
    result = run_cli(*args, **kw)
    assert result.returncode == 0, result.stderr
    return result


@pytest.mark.parametrize("model", ["tiny-sd", "tiny-sdxl", "tiny-sd3"])
@pytest.mark.parametrize("task", ["img2img", "inpaint"])
def test_img2img_and_inpaint(model, task, pictures, tmp_path):
    """Both tasks write PNGs at the requested size with parameters and sidecar; the seed decides the bytes."""
    inputs = ["--image", str(pictures["base"]), "--width", "48", "--height", "64"]
    inputs += ["--mask", str(pictures["mask"])] if task == "inpaint" else ["--strength", "0.6"]
    pair = run_ok("image", "oil painting", "-m", model, *inputs, "--steps", "4", "-n", "2", "--seed", "9", "--json",
                  "-d", str(tmp_path / "a"))
    records = [json.loads(line) for line in pair.stdout.splitlines()]
    for record in records:
        with Image.open(record["path"]) as image:
            assert image.size == (48, 64)
            assert image.text["parameters"].startswith("oil painting")
            strength = "0.6" if task == "img2img" else "1.0"
            assert f"Denoising strength: {strength}" in image.text["parameters"]
        sidecar = json.loads(Path(record["sidecar"]).read_text())
        assert sidecar["parameters"]["task"] == task and sidecar["parameters"]["image"] == str(pictures["base"])
    again = run_ok("image", "oil painting", "-m", model, *inputs, "--steps", "4", "--seed", "9", "-q",
                   "-d", str(tmp_path / "b"))
    assert Path(again.stdout.strip()).read_bytes() == Path(records[0]["path"]).read_bytes()
    with Image.open(records[0]["path"]) as a, Image.open(records[1]["path"]) as b:
        assert a.tobytes() != b.tobytes(), "seed 10 must differ from seed 9"


def test_input_size_rule(pictures, tmp_path):
    kept = run_ok("image", "x", "-m", "tiny-sd3", "--image", str(pictures["odd"]), "--seed", "1", "-d", str(tmp_path))
    assert "cropped to a multiple of 16" in kept.stderr
    with Image.open(kept.stdout.strip()) as image:
        assert image.size == (96, 80)
    resized = run_ok("image", "x", "-m", "tiny-sd", "--image", str(pictures["odd"]), "--width", "48", "--height",
                     "64", "--seed", "1", "-q", "-d", str(tmp_path))
    with Image.open(resized.stdout.strip()) as image:
        assert image.size == (48, 64)


@pytest.mark.parametrize(("extra", "message"), [
    (["--image", "missing.png"], "--image missing.png: no such file"),
    (["--image", "{notes}"], "not a readable image"),
    (["--image", "{deep}"], "16-bit or float"),
    (["--image", "{base}", "--mask", "{small-mask}"], "--mask is 32x32 but --image is 64x64"),
    (["--mask", "{mask}"], "--mask needs --image"),
    (["--strength", "0.5"], "--strength needs --image"),
    (["--image", "{base}", "--strength", "1.5"], "must be in (0, 1]"),
    (["--image", "{base}", "--strength", "0.2", "--steps", "2"], "runs no step"),
    (["--scheduler", "flow-euler"], "does not work with sd15"),
    (["--scheduler", "warp"], "--scheduler warp: unknown"),
    (["--refiner"], "--refiner works with SDXL"),
    (["--lora", "nowhere/at-all.safetensors"], "--lora nowhere/at-all.safetensors: no such file"),
    (["--lora", "{notes}"], "only .safetensors LoRA files"),
])
def test_bad_inputs_exit_2_before_loading(pictures, extra, message):
    args = [part.format(**{k: str(v) for k, v in pictures.items()}) for part in extra]
    result = run_cli("image", "x", "-m", "tiny-sd", *args)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr


def make_lora(folder: Path) -> Path:
    """A rank-4 LoRA for tiny-sd's UNet, made with peft; non-zero so it changes the output."""
    import torch
    from diffusers import StableDiffusionPipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    from stablekit import hub
    from stablekit.registry import load_registry

    pipe = StableDiffusionPipeline.from_pretrained(hub.ensure_local(load_registry().get("tiny-sd")),
                                                   safety_checker=None, requires_safety_checker=False)
    torch.manual_seed(0)
    pipe.unet.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights=False,
                                     target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    StableDiffusionPipeline.save_lora_weights(folder, unet_lora_layers=get_peft_model_state_dict(pipe.unet))
    return folder / "pytorch_lora_weights.safetensors"


def test_lora_changes_the_output_and_its_scale_is_recorded(tmp_path):
    lora = make_lora(tmp_path / "my-style")
    plain = run_ok("image", "a cat", "-m", "tiny-sd", "--seed", "4", "-q", "-d", str(tmp_path / "plain"))
    styled = run_ok("image", "a cat", "-m", "tiny-sd", "--seed", "4", "--json", "-d", str(tmp_path / "styled"),
                    "--lora", f"{lora}:0.7")
    record = json.loads(styled.stdout)
    with Image.open(plain.stdout.strip()) as a, Image.open(record["path"]) as b:
        assert a.tobytes() != b.tobytes()
        assert 'Lora: "pytorch_lora_weights: 0.7"' in b.text["parameters"]  # A1111 quotes a value with ':'
    params = json.loads(Path(record["sidecar"]).read_text())["parameters"]
    assert params["loras"] == [f"{lora}:0.7"], "the sidecar's parameters are the job: --lora as given"
    assert params["lora_details"] == [{"name": "pytorch_lora_weights", "source": str(lora), "scale": 0.7}]
    folder_form = run_ok("image", "a cat", "-m", "tiny-sd", "--seed", "4", "-q", "-d", str(tmp_path / "dir"),
                         "--lora", f"{lora.parent}:0.7")
    with Image.open(folder_form.stdout.strip()) as a, Image.open(record["path"]) as b:
        assert a.tobytes() == b.tobytes(), "a folder holding the LoRA gives the same pixels as the file"


def test_two_loras_print_nothing_but_the_path_with_quiet(tmp_path):
    """Several adapters at once: no library warning (peft's "multiple adapters" one) reaches a real stderr."""
    first, second = make_lora(tmp_path / "one"), make_lora(tmp_path / "two")
    second = second.rename(second.with_name("other_style.safetensors"))
    result = run_process("image", "a cat", "-m", "tiny-sd", "--seed", "4", "-q", "-d", str(tmp_path / "out"),
                         "--lora", f"{first}:0.5", "--lora", f"{second}:0.5")
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert Path(result.stdout.strip()).is_file()


def test_prompts_file_loads_the_model_once(tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("# a comment\na cat\na dog\n\na fox\na owl\na bee\n")
    result = run_ok("image", "--prompts-file", str(prompts), "-m", "tiny-sd", "--seed", "10", "--json",
                    "-d", str(tmp_path / "out"))
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["prompt"] for r in records] == ["a cat", "a dog", "a fox", "a owl", "a bee"]
    assert [r["seed"] for r in records] == [10, 11, 12, 13, 14]
    assert result.stderr.count("Loading tiny-sd") == 1
    assert len(list((tmp_path / "out").glob("*.png"))) == 5
    piped = run_ok("image", "--prompts-file", "-", "-m", "tiny-sd", "--seed", "10", "-q", "-d", str(tmp_path / "p"),
                   input="a cat\na dog\n")
    assert len(piped.stdout.split()) == 2


def test_interrupting_a_prompts_file_keeps_only_complete_files(tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(f"prompt {i}" for i in range(100)))
    out = tmp_path / "out"
    process = subprocess.Popen([sys.executable, "-m", "stablekit", "image", "--prompts-file", str(prompts), "-m",
                                "tiny-sd", "-d", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=os.environ)
    process.stdout.readline()
    process.send_signal(signal.SIGINT)
    process.communicate(timeout=120)
    assert process.returncode == 130
    files = sorted(out.iterdir())
    assert files and not [f for f in files if ".partial" in f.name]
    for png in out.glob("*.png"):
        with Image.open(png) as image:
            image.load()
        assert (out / (png.name + ".json")).is_file()


def test_scheduler_formats_and_metadata_switch(tmp_path):
    jpg = run_ok("image", "a cat", "-m", "tiny-sd", "--seed", "2", "--scheduler", "euler-ancestral", "-q",
                 "-d", str(tmp_path), "-o", "cat.jpg")
    params = read_parameters(Path(jpg.stdout.strip()))
    assert params.startswith("a cat") and "Sampler: Euler a" in params and "Seed: 2" in params
    webp = run_ok("image", "a cat", "-m", "tiny-sd", "--seed", "2", "-q", "-d", str(tmp_path), "-o", "cat.webp")
    assert "Seed: 2" in read_parameters(Path(webp.stdout.strip()))
    with Image.open(webp.stdout.strip()) as image:
        assert image.format == "WEBP" and image.size == (64, 64)
    bare = run_ok("image", "a cat", "-m", "tiny-sd", "--seed", "2", "-q", "-d", str(tmp_path), "-o", "bare.png",
                  "--no-metadata")
    assert read_parameters(Path(bare.stdout.strip())) is None
    assert Path(bare.stdout.strip() + ".json").is_file()


def test_sdxl_refiner_shares_the_base_modules(tmp_path):
    result = run_ok("image", "a cat", "-m", "tiny-sdxl", "--refiner", "--refiner-model", "tiny-sdxl",
                    "--steps", "4", "--seed", "3", "--json", "-d", str(tmp_path))
    record = json.loads(result.stdout)
    with Image.open(record["path"]) as image:
        assert image.size == (64, 64)
    params = json.loads(Path(record["sidecar"]).read_text())["parameters"]
    assert params["refiner"] is True and params["refiner_model"] == "tiny-sdxl" and params["denoising_split"] == 0.8


def test_long_prompts_say_what_is_dropped(tmp_path):
    prompt = " ".join(f"word{i}" for i in range(120))
    result = run_ok("image", prompt, "-m", "tiny-sd", "--seed", "1", "-d", str(tmp_path))
    warning = next(line for line in result.stderr.splitlines() if "CLIP reads 77, dropping" in line)
    assert "the prompt is" in warning and "word" in warning.split("dropping")[1]  # the tiny vocabulary spells bytes


def test_fp16_sdxl_without_the_fixed_vae_says_it_upcasts(tmp_path):
    result = run_ok("image", "a cat", "-m", "tiny-sdxl", "--dtype", "float16", "--seed", "1", "-d", str(tmp_path))
    assert "sdxl-vae-fp16-fix is not downloaded" in result.stderr


def test_nan_images_are_decoded_again_in_fp32(monkeypatch, tmp_path):
    """The fp16 VAE overflow, simulated: the first decode returns NaN, the fp32 retry is clean."""
    import torch
    from diffusers import AutoencoderKL

    from stablekit import runner
    from stablekit.console import Progress
    from stablekit.errors import StablekitError
    from stablekit.jobs import job_from
    from stablekit.sink import Sink

    original = AutoencoderKL.decode
    calls = {"n": 0, "always": False}

    def decode(self, z, *args, **kwargs):
        calls["n"] += 1
        result = original(self, z, *args, **kwargs)
        if calls["n"] == 1 or calls["always"]:
            return (torch.full_like(result[0], float("nan")),)
        return result

    monkeypatch.setattr(AutoencoderKL, "decode", decode)
    notes = []

    class Recorder(Progress):
        def note(self, message):
            notes.append(message)

    job = job_from("image", {"prompt": "a cat", "model": "tiny-sd", "num_inference_steps": 2, "seed": 1})
    results = runner.run([job], Sink(tmp_path), Recorder())
    assert any("decoding again in fp32" in n for n in notes) and calls["n"] == 2
    with Image.open(results[0]["path"]) as image:
        assert image.getextrema() != ((0, 0), (0, 0), (0, 0))
    calls["always"] = True
    with pytest.raises(StablekitError, match="NaN or black"):
        runner.run([job], Sink(tmp_path / "b"), Recorder())
    assert not (tmp_path / "b").exists() or not list((tmp_path / "b").iterdir())


def test_lora_from_an_unreachable_hub_names_the_flag(tmp_path):
    result = run_cli("image", "x", "-m", "tiny-sd", "--lora", "someone/style-lora:0.5", "-d", str(tmp_path))
    assert result.returncode == 1
    assert "--lora someone/style-lora: someone/style-lora is not downloaded" in result.stderr
    assert not list(tmp_path.glob("*.png"))


@pytest.fixture
def single_file(tmp_path) -> Path:
    from ldm import to_ldm_checkpoint

    from stablekit import hub
    from stablekit.registry import load_registry

    folder = hub.ensure_local(load_registry().get("tiny-sd"))
    return to_ldm_checkpoint(folder, tmp_path / "tiny-sd-pruned.safetensors")


def test_single_file_checkpoint_loads_like_its_folder(single_file, tmp_path):
    unreachable = {"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9"}  # any network use would fail
    from_file = run_ok("image", "a cat", "--model", str(single_file), "--config", "tiny-sd", "--seed", "5", "--json",
                       "-d", str(tmp_path / "file"), env=unreachable)
    record = json.loads(from_file.stdout)
    from_folder = run_ok("image", "a cat", "--model", "tiny-sd", "--seed", "5", "-q", "-d", str(tmp_path / "dir"))
    with Image.open(record["path"]) as a, Image.open(from_folder.stdout.strip()) as b:
        assert a.tobytes() == b.tobytes()
    sidecar = json.loads(Path(record["sidecar"]).read_text())
    assert sidecar["model"]["id"] == str(single_file)


def test_single_file_errors(single_file, tmp_path):
    wrong = run_cli("image", "x", "--model", str(single_file), "--family", "sdxl")
    assert wrong.returncode == 2 and "looks like sd15, not sdxl" in wrong.stderr
    no_configs = run_cli("image", "x", "--model", str(single_file), "-d", str(tmp_path))
    assert no_configs.returncode == 1
    assert "stablekit models pull sd15 --configs-only" in no_configs.stderr
    import torch
    from safetensors.torch import save_file

    odd = tmp_path / "odd.safetensors"
    save_file({"something.weight": torch.zeros(2)}, odd)
    unknown = run_cli("image", "x", "--model", str(odd))
    assert unknown.returncode == 2 and "pass --family" in unknown.stderr
    pickle = tmp_path / "model.ckpt"
    pickle.write_bytes(b"\x80\x04.")
    refused = run_cli("image", "x", "--model", str(pickle))
    assert refused.returncode == 2 and "only .safetensors" in refused.stderr


def test_an_sd3_folder_saved_without_t5_renders(tmp_path):
    """SD3 without its T5 encoder (saved as "text_encoder_3": [null, null], the usual way to save memory) loads."""
    from diffusers import StableDiffusion3Pipeline

    from stablekit import hub
    from stablekit.registry import load_registry

    folder = tmp_path / "sd3-no-t5"
    pipe = StableDiffusion3Pipeline.from_pretrained(hub.ensure_local(load_registry().get("tiny-sd3")),
                                                    text_encoder_3=None, tokenizer_3=None)
    pipe.save_pretrained(folder)
    assert json.loads((folder / "model_index.json").read_text())["text_encoder_3"] == [None, None]
    result = run_ok("image", "a cat", "-m", str(folder), "--steps", "2", "--seed", "1", "--width", "64",
                    "--height", "48", "--json", "-d", str(tmp_path / "out"))
    record = json.loads(result.stdout)
    with Image.open(record["path"]) as image:
        image.load()
        assert image.size == (64, 48) and image.mode == "RGB"
