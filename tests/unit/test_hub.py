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


# --- ids are never paths: the checks in hub.py hold even for a record that skipped the catalog's ----------


def test_a_path_id_cannot_make_pull_or_remove_leave_the_home(stablekit_home, tmp_path):
    from stablekit.errors import UsageError

    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("mine")
    base = load_registry().get("tiny-lm")
    for bad in ("../../victim", str(victim), "../" * 6 + "tmp/victim"):
        spec = dataclasses.replace(base, id=bad)
        with pytest.raises(UsageError, match="outside"):
            hub.pull(spec)
        with pytest.raises(UsageError, match="outside"):
            hub.remove(spec)
    assert [p.name for p in victim.iterdir()] == ["keep.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stablekit-home", "victim"]


def test_a_symlink_out_of_the_tiny_folder_is_refused(stablekit_home, tmp_path):
    from stablekit.errors import UsageError

    victim = tmp_path / "victim"
    victim.mkdir()
    (stablekit_home / "tiny" / "linked").symlink_to(victim, target_is_directory=True)
    spec = dataclasses.replace(load_registry().get("tiny-lm"), id="linked")
    try:
        with pytest.raises(UsageError, match="outside"):
            hub.remove(spec)
    finally:
        (stablekit_home / "tiny" / "linked").unlink()
    assert victim.is_dir()


def test_remove_deletes_only_what_stablekit_built(stablekit_home, tmp_path):
    from stablekit.errors import UsageError

    own = tmp_path / "own-tiny"
    (own / "mine").mkdir(parents=True)
    (own / "mine" / "data.txt").write_text("not a model")
    (stablekit_home / "tiny").unlink()
    (stablekit_home / "tiny").symlink_to(own, target_is_directory=True)
    spec = dataclasses.replace(load_registry().get("tiny-lm"), id="mine")
    with pytest.raises(UsageError, match="not built by stablekit"):
        hub.remove(spec)
    with pytest.raises(UsageError, match="not built by stablekit"):
        hub.pull(spec)
    assert (own / "mine" / "data.txt").read_text() == "not a model"
    local = dataclasses.replace(spec, local_path=str(own / "mine"))
    with pytest.raises(UsageError, match="your own"):
        hub.remove(local)


def test_describe_repo_reads_configs_and_header_sizes_only(online, tmp_path):
    import torch
    from safetensors.torch import save_file

    repo = tmp_path / "lm"
    repo.mkdir()
    (repo / "config.json").write_text('{"architectures": ["StableLmForCausalLM"], "model_type": "stablelm", '
                                      '"max_position_embeddings": 512}')
    save_file({"w": torch.zeros(1000, 500)}, repo / "model.safetensors")
    online.repos["org/lm"] = repo
    from stablekit.hub_describe import describe_repo

    found = describe_repo("org/lm")
    assert found.counts == {"model": 0.5} and "model.safetensors" in found.listing
    assert not (found.folder / "model.safetensors").exists()  # sizes from the header, by a byte range
    spec = load_registry().resolve("org/lm", "text")
    assert spec.limits["context_length"] == 512 and spec.family == "stablelm" and spec.tasks == ("text",)
    assert hub.local_state(spec).status == "configs"


def test_unknown_pipeline_class_on_the_hub_is_a_clear_error(online, tmp_path):
    from stablekit.errors import UnknownModelError

    repo = tmp_path / "flux"
    repo.mkdir()
    (repo / "model_index.json").write_text('{"_class_name": "FluxPipeline"}')
    online.repos["org/flux"] = repo
    with pytest.raises(UnknownModelError, match="pipeline class FluxPipeline is not one stablekit runs"):
        load_registry().resolve("org/flux", "image")


def test_fp16_vae_fix_is_announced_before_it_is_downloaded(monkeypatch):
    """SDXL in fp16: the fix VAE is used when on disk; a download is said first; a failed one falls back, said."""
    from stablekit.engines import image

    said: list[str] = []
    progress = type("P", (), {"stage": lambda self, m: said.append("stage " + m),
                              "note": lambda self, m: said.append("note " + m)})()

    def unreachable(spec, **kwargs):
        said.append("download")
        raise ModelNotDownloadedError("madebyollin/sdxl-vae-fp16-fix cannot be reached")

    monkeypatch.setattr(hub, "offline", lambda: False)
    monkeypatch.setattr(hub, "ensure_local", unreachable)
    assert image._fp16_safe_vae("float16", progress) == {}
    assert said[0].startswith("stage Downloading sdxl-vae-fp16-fix (madebyollin/sdxl-vae-fp16-fix")
    assert said[1] == "download" and said[2].startswith("note sdxl-vae-fp16-fix could not be downloaded")
    said.clear()
    monkeypatch.setattr(hub, "offline", lambda: True)
    assert image._fp16_safe_vae("float16", progress) == {}
    assert said == ["note sdxl-vae-fp16-fix is not downloaded: the SDXL VAE decodes in fp32 instead (slower)"]


@pytest.mark.parametrize("blobs", ["missing", "a file"])
def test_a_cache_laid_out_by_hand_without_blobs_is_read(tmp_path, blobs):
    """A snapshot folder with real files and no blobs/ (copied in by hand, or blobs/ deleted): downloaded, not a
    traceback."""
    online_files = fake_repo(tmp_path / "repo")
    cache = hub.repo_cache_dir("org/by-hand")
    snapshot = cache / "snapshots" / ("0" * 40)
    snapshot.parent.mkdir(parents=True)
    import shutil

    shutil.copytree(online_files, snapshot)
    (cache / "refs").mkdir()
    (cache / "refs" / "main").write_text("0" * 40)
    if blobs == "a file":
        (cache / "blobs").write_text("")
    state = hub.local_state(spec_for("org/by-hand"))
    assert state.status == "downloaded" and state.path == snapshot
