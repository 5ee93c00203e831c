"""Weights on disk and hub failures, through huggingface_hub's real code against a fake hub on loopback."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from fakehub import FakeHub
from stablekit import hub
from stablekit.errors import GatedModelError, ModelNotDownloadedError, ModelUnavailableError
from stablekit.registry import load_registry


def fake_repo(root: Path) -> Path:
    """A diffusers repo as the hub has it: fp16 and fp32 weights, a pickle, a single-file checkpoint."""
    for name, text in {
        "model_index.json": '{"_class_name": "StableDiffusionPipeline"}',
        "unet/config.json": "{}",
        "unet/diffusion_pytorch_model.safetensors": "fp32" * 100,
        "unet/diffusion_pytorch_model.fp16.safetensors": "fp16" * 50,
        "unet/diffusion_pytorch_model.bin": "pickle",
        "tokenizer/merges.txt": "#",
        "safety_checker/model.fp16.safetensors": "x",
        "v1-5-pruned.safetensors": "single file",
        "v1-5-pruned.ckpt": "pickle",
    }.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


@pytest.fixture(scope="module")
def fake_hub():
    with FakeHub() as server:
        yield server


@pytest.fixture
def online(fake_hub, monkeypatch):
    import huggingface_hub.constants as constants

    fake_hub.repos.clear()
    fake_hub.gated.clear()
    monkeypatch.setenv("HF_ENDPOINT", fake_hub.url)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    return fake_hub


def spec_for(repo: str, **changes):
    return dataclasses.replace(load_registry().get("sd15"), repo=repo, fallbacks=(), **changes)


def test_pull_fetches_only_what_the_loader_reads(online, tmp_path):
    online.repos["org/sd"] = fake_repo(tmp_path / "repo")
    folder = hub.pull(spec_for("org/sd"), quiet=True)
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    assert files == ["model_index.json", "tokenizer/merges.txt", "unet/config.json",
                     "unet/diffusion_pytorch_model.fp16.safetensors"]
    state = hub.local_state(spec_for("org/sd"))
    assert state.status == "downloaded" and state.path == folder and state.size_bytes > 0


def test_pull_without_variant_skips_the_fp16_copies(online, tmp_path):
    online.repos["org/sd"] = fake_repo(tmp_path / "repo")
    folder = hub.pull(spec_for("org/sd", variant=None), quiet=True)
    assert (folder / "unet/diffusion_pytorch_model.safetensors").is_file()
    assert not list(folder.rglob("*.fp16.safetensors")) and not list(folder.rglob("*.bin"))


def test_gated_repo_names_the_licence_page_and_login(online, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_supersecrettoken123")
    online.gated.add("org/gated")
    with pytest.raises(GatedModelError) as err:
        hub.pull(spec_for("org/gated"), quiet=True)
    assert "https://huggingface.co/org/gated" in err.value.hint and "hf auth login" in err.value.hint
    assert "hf_supersecrettoken123" not in err.value.message + err.value.hint


def test_withdrawn_repo_falls_back(online, tmp_path):
    online.repos["mirror/sd"] = fake_repo(tmp_path / "repo")
    spec = dataclasses.replace(spec_for("gone/sd"), fallbacks=("mirror/sd",))
    folder = hub.pull(spec, quiet=True)
    assert "models--mirror--sd" in str(folder)
    assert hub.local_state(spec).status == "downloaded"


def test_withdrawn_repo_without_fallback_says_so(online):
    spec = dataclasses.replace(spec_for("gone/sd"), fallbacks=("gone/mirror",))
    with pytest.raises(ModelUnavailableError) as err:
        hub.pull(spec, quiet=True)
    assert "withdrawn" in err.value.message and "gone/mirror" in err.value.message


def test_offline_and_not_downloaded_names_models_pull():
    with pytest.raises(ModelNotDownloadedError) as err:
        hub.ensure_local(load_registry().get("sdxl"))
    assert "stablekit models pull sdxl" in err.value.hint


def test_unreachable_hub_names_models_pull(monkeypatch):
    import huggingface_hub.constants as constants

    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    with pytest.raises(ModelNotDownloadedError) as err:
        hub.pull(spec_for("org/sd"), quiet=True)
    assert "cannot be reached" in err.value.message and "models pull" in err.value.hint


def test_remove_frees_the_cache(online, tmp_path):
    online.repos["org/sd"] = fake_repo(tmp_path / "repo")
    spec = spec_for("org/sd")
    hub.pull(spec, quiet=True)
    assert hub.remove(spec) > 0
    assert hub.local_state(spec).status == "missing"


def test_configs_only_pull_skips_every_weight(online, tmp_path):
    online.repos["org/sd"] = fake_repo(tmp_path / "repo")
    folder = hub.pull(spec_for("org/sd"), quiet=True, configs_only=True)
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    assert files == ["model_index.json", "tokenizer/merges.txt", "unet/config.json"]
    assert hub.local_state(spec_for("org/sd")).status == "configs"
