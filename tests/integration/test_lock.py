"""stablekit.lock against a fake hub: a locked model keeps rendering from its locked files after upstream
moves on, a tampered file is refused, `models pull --locked` restores exactly the locked files, and a locked
render needs no hub at all."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import run_cli
from fakehub import COMMIT, FakeHub
from stablekit import hub
from stablekit.registry import load_registry

REPO = "org/tiny-sd"
NEW_COMMIT = "fedcba9876543210fedcba9876543210fedcba98"
RENDER = ("image", "a red door", "-m", REPO, "--seed", "4", "-q")


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def changed_copy(source: Path, target: Path) -> Path:
    """The repo as a new upstream commit has it: the same layout, other UNet weights."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(source, target)
    weights = next(target.glob("unet/*.safetensors"))
    tensors = {name: tensor + 0.05 for name, tensor in load_file(weights).items()}
    save_file(tensors, weights)
    return target


@pytest.fixture
def upstream(tmp_path, monkeypatch):
    import huggingface_hub.constants as constants

    tiny = hub.pull(load_registry().get("tiny-sd"))
    first = tmp_path / "upstream-v1"
    shutil.copytree(tiny, first, ignore=shutil.ignore_patterns(".stablekit*"))
    with FakeHub() as server:
        server.repos[REPO] = first
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.setenv("HF_HUB_OFFLINE", "0")
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        yield server, first


def test_locked_renders_survive_upstream_changes_tampering_an_empty_cache_and_no_hub(upstream, tmp_path, monkeypatch):
    server, first = upstream
    env = {"HF_HUB_OFFLINE": "0"}

    locked = run_cli("lock", REPO, env=env)
    assert locked.returncode == 0, locked.stderr
    assert locked.stdout.strip() == "stablekit.lock"
    text = Path("stablekit.lock").read_text()
    assert f'commit = "{COMMIT}"' in text and f'repo = "{REPO}"' in text
    weights = next(first.glob("unet/*.safetensors")).relative_to(first).as_posix()
    assert f'path = "{weights}", size = {(first / weights).stat().st_size}, sha256 = "{sha(first / weights)}"' in text

    before = run_cli(*RENDER, "-o", "before.png", env=env)
    assert before.returncode == 0, before.stderr

    # Upstream moves on: a new commit with other weights, and this machine pulls it (main now points there).
    server.history[(REPO, COMMIT)] = first
    server.repos[REPO] = changed_copy(first, tmp_path / "upstream-v2")
    server.heads[REPO] = NEW_COMMIT
    pulled = run_cli("models", "pull", REPO, env=env)
    assert pulled.returncode == 0, pulled.stderr
    assert Path(pulled.stdout.strip()).name == NEW_COMMIT
    assert sha(Path(pulled.stdout.strip()) / weights) != sha(first / weights)

    again = run_cli(*RENDER, "-o", "locked.png", "--locked", env=env)
    assert again.returncode == 0, again.stderr
    assert np.array_equal(pixels(Path("locked.png")), pixels(Path("before.png")))
    record = json.loads(Path("locked.png.json").read_text())
    assert record["lockfile"]["sha256"] == sha(Path("stablekit.lock"))
    assert Path(record["model"]["snapshot"]).name == COMMIT

    # A file changed on disk is refused, named with both hashes (STABLEKIT_LOCKED=1 works like --locked).
    blob = (hub.repo_cache_dir(REPO) / "snapshots" / COMMIT / weights).resolve()
    locked_hash = sha(blob)
    blob.write_bytes(blob.read_bytes()[:-8] + b"tampered")
    refused = run_cli(*RENDER, "-o", "tampered.png", env={**env, "STABLEKIT_LOCKED": "1"})
    assert refused.returncode == 1
    assert weights in refused.stderr and locked_hash in refused.stderr and sha(blob) in refused.stderr
    assert "Traceback" not in refused.stderr and not Path("tampered.png").exists()

    # A new machine: an empty cache gets exactly the locked files, although upstream's main has moved.
    monkeypatch.setenv("HF_HOME", str(tmp_path / "fresh-hf-home"))
    restored = run_cli("models", "pull", "--locked", env={**env, "HF_HOME": str(tmp_path / "fresh-hf-home")})
    assert restored.returncode == 0, restored.stderr
    folder = Path(restored.stdout.strip())
    assert folder.name == COMMIT
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(first).as_posix() for p in first.rglob("*") if p.is_file())
    assert all(sha(folder / name) == sha(first / name) for name in files)

    # No hub at all: the locked render still works from the cache.
    server.repos.clear()
    offline = run_cli(*RENDER, "-o", "offline.png", "--locked",
                      env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "fresh-hf-home")})
    assert offline.returncode == 0, offline.stderr
    assert np.array_equal(pixels(Path("offline.png")), pixels(Path("before.png")))


def test_locked_without_a_lockfile_or_with_an_unlocked_model_says_what_to_run(tmp_path):
    missing = run_cli("image", "a cat", "-m", "tiny-sd", "--locked", "-q")
    assert missing.returncode == 2 and "no stablekit.lock" in missing.stderr and "stablekit lock" in missing.stderr
    assert run_cli("lock", "tiny-sd").returncode == 0
    other = run_cli("image", "a cat", "-m", "tiny-sdxl", "--locked", "-q")
    assert other.returncode == 1 and "tiny-sdxl is not in" in other.stderr
    assert "stablekit lock tiny-sdxl" in other.stderr


def test_a_single_file_checkpoint_is_locked_by_its_hash(tmp_path):
    """`lock CHECKPOINT` records the file's size and sha256; --locked renders it while it is unchanged and
    refuses it, naming both hashes, once a byte changes; `models pull --locked` checks it too."""
    from ldm import to_ldm_checkpoint

    checkpoint = to_ldm_checkpoint(hub.ensure_local(load_registry().get("tiny-sd")), tmp_path / "mine.safetensors")
    locked = run_cli("lock", str(checkpoint))
    assert locked.returncode == 0, locked.stderr
    text = Path("stablekit.lock").read_text()
    assert 'source = "file"' in text
    assert f'path = "mine.safetensors", size = {checkpoint.stat().st_size}, sha256 = "{sha(checkpoint)}"' in text
    render = ("image", "a cat", "-m", str(checkpoint), "--config", "tiny-sd", "--seed", "2", "-q", "--locked")
    first = run_cli(*render, "-o", "first.png")
    assert first.returncode == 0 and Path("first.png").is_file(), first.stderr
    assert run_cli("models", "pull", "--locked").returncode == 0
    locked_hash = sha(checkpoint)
    data = bytearray(checkpoint.read_bytes())
    data[-1] ^= 1  # one bit of the last tensor
    checkpoint.write_bytes(bytes(data))
    refused = run_cli(*render, "-o", "changed.png")
    assert refused.returncode == 1 and locked_hash in refused.stderr and sha(checkpoint) in refused.stderr
    assert "Traceback" not in refused.stderr and not Path("changed.png").exists()
    pull = run_cli("models", "pull", "--locked")
    assert pull.returncode == 1 and locked_hash in pull.stderr, pull.stderr
