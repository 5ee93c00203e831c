"""Where stablekit keeps its own files: the user catalog, user presets and built tiny models."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from .errors import StablekitError, UsageError


def stablekit_home() -> Path:
    """STABLEKIT_HOME, else the platform's per-user config folder for stablekit.

    A home that exists but is not a folder is an error here, once, for every command that reads or writes it.
    """
    explicit = os.environ.get("STABLEKIT_HOME")
    if explicit:
        home = Path(explicit).expanduser()
        what = f"STABLEKIT_HOME ({home})"
    elif sys.platform == "win32":
        home = Path(os.environ.get("APPDATA") or Path.home() / "AppData" / "Roaming") / "stablekit"
        what = str(home)
    elif sys.platform == "darwin":
        home = Path.home() / "Library" / "Application Support" / "stablekit"
        what = str(home)
    else:
        home = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "stablekit"
        what = str(home)
    if home.exists() and not home.is_dir():
        raise UsageError(f"{what} is a file, not a folder",
                         hint="point STABLEKIT_HOME at a folder (it is created when needed), or move the file")
    return home


def user_catalog_path() -> Path:
    return stablekit_home() / "catalog.toml"


def user_presets_dir() -> Path:
    return stablekit_home() / "presets"


def tiny_models_dir() -> Path:
    return stablekit_home() / "tiny"


def inside(parent: Path, path: Path, name: str) -> Path:
    """`path`, checked to stay inside `parent` once symlinks and '..' are resolved (else a usage error naming
    `name`, the model record or repo it was derived from). `parent` itself may be a symlink."""
    root = parent.resolve()
    resolved = path.resolve()
    if resolved == root or not resolved.is_relative_to(root):
        raise UsageError(f"{name}: its files would be at {resolved}, outside {root}",
                         hint="a model id or repo is a name, never a path; no '..', no absolute paths, no "
                              "symlinks out of the folder")
    return path


def writing_error(err: OSError, folder: Path, what: str) -> StablekitError:
    """An OSError met while writing into one of stablekit's folders, said with the fix."""
    reason = {28: "the disk is full", 30: "the file system is read-only", 13: "permission denied",
              1: "permission denied", 20: "a file is in the way of a folder", 17: "a file is in the way"}
    said = reason.get(err.errno or 0, err.strerror or str(err))
    hint = ("free some space, or point STABLEKIT_HOME / HF_HOME at a bigger disk" if err.errno == 28
            else "make the folder writable, or point STABLEKIT_HOME / HF_HOME at a folder you own")
    return StablekitError(f"cannot write {what} in {folder}: {said}", hint=hint)


def hf_hub_cache() -> Path:
    """The Hugging Face hub cache, resolved the way huggingface_hub resolves it (without importing it)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    hf_home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache"), "huggingface"
    )
    return Path(hf_home).expanduser() / "hub"
