"""Where stablekit keeps its own files: the user catalog, user presets and built tiny models."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def stablekit_home() -> Path:
    """STABLEKIT_HOME, else the platform's per-user config folder for stablekit."""
    explicit = os.environ.get("STABLEKIT_HOME")
    if explicit:
        return Path(explicit).expanduser()
    if sys.platform == "win32":
        base = Path(os.environ.get("APPDATA") or Path.home() / "AppData" / "Roaming")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "stablekit"


def user_catalog_path() -> Path:
    return stablekit_home() / "catalog.toml"


def user_presets_dir() -> Path:
    return stablekit_home() / "presets"


def tiny_models_dir() -> Path:
    return stablekit_home() / "tiny"


def hf_hub_cache() -> Path:
    """The Hugging Face hub cache, resolved the way huggingface_hub resolves it (without importing it)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    hf_home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache"), "huggingface"
    )
    return Path(hf_home).expanduser() / "hub"
