"""Every test runs hermetic: its own STABLEKIT_HOME and HF cache, the hub offline, no token, no colour."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory) -> Path:
    """Tiny models are built once per session and shared by every test's home (they are read-only)."""
    return tmp_path_factory.mktemp("tiny-models")


@pytest.fixture(autouse=True)
def stablekit_home(tmp_path, monkeypatch, tiny_cache) -> Path:
    home = tmp_path / "stablekit-home"
    home.mkdir()
    (home / "tiny").symlink_to(tiny_cache, target_is_directory=True)
    monkeypatch.setenv("STABLEKIT_HOME", str(home))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("NO_COLOR", "1")
    for name in ("HF_HUB_CACHE", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "STABLEKIT_DEBUG", "HF_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return home


def run_cli(*args: str, env: dict | None = None, input: str | None = None, timeout: float = 600,
            cwd: Path | None = None) -> subprocess.CompletedProcess:
    """The real CLI in a fresh interpreter, as a user's shell would run it."""
    return subprocess.run([sys.executable, "-m", "stablekit", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, input=input, timeout=timeout, cwd=cwd)


@pytest.fixture
def cli():
    return run_cli
