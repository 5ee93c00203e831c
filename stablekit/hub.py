"""Weights on disk: the hub cache (read without importing huggingface_hub), pulls, removal, hub errors."""

from __future__ import annotations

import errno
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from .errors import GatedModelError, ModelNotDownloadedError, ModelUnavailableError, StablekitError, UsageError
from .paths import hf_hub_cache, inside, tiny_models_dir, writing_error
from .registry import ModelSpec

_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_INDEX_FILES = ("model_index.json", "config.json", "config.yaml")
# Formats stablekit never loads: pickles (unsafe), and other runtimes' exports (wasted gigabytes).
_NEVER = ["*.bin", "*.ckpt", "*.pt", "*.pth", "*.pkl", "*.msgpack", "*.h5", "*.onnx", "*.onnx_data", "*.gguf",
          "*.pb", "*.mlmodel*", "*.tflite", "*.ot"]


@dataclass(frozen=True)
class LocalState:
    """Whether a model's files are on disk, where, and how much space they take."""

    status: str  # downloaded | partial | missing | built | local
    path: Path | None
    size_bytes: int

    @property
    def ready(self) -> bool:
        return self.status in ("downloaded", "built", "local")


def repo_cache_dir(repo: str) -> Path:
    """The hub cache entry of a repo: one folder directly inside the cache, whatever the repo id holds."""
    name = "models--" + repo.replace("/", "--")
    if "/" in name or "\\" in name or name.startswith("models--.") or ".." in repo or "\0" in repo:
        raise UsageError(f"{repo!r} is not a hub repo id", hint="write it as ORG/NAME")
    return inside(hf_hub_cache(), hf_hub_cache() / name, repo)


def tiny_dir(spec: ModelSpec) -> Path:
    """Where a tiny model is built: inside STABLEKIT_HOME/tiny, never elsewhere (checked after symlinks)."""
    return inside(tiny_models_dir(), tiny_models_dir() / (spec.configs_from or spec.id), spec.id)


def _tree_size(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def _snapshot(repo: str, revision: str) -> Path | None:
    """The cached snapshot folder for a revision (branch, tag or commit), if there is one."""
    cache = repo_cache_dir(repo)
    commit = revision if _COMMIT.match(revision) else None
    if commit is None:
        ref = cache / "refs" / revision
        try:
            commit = ref.read_text().strip() if ref.is_file() else None
        except (OSError, UnicodeDecodeError):
            commit = None
        if not commit or not _COMMIT.match(commit):
            return None
    folder = cache / "snapshots" / commit
    return folder if folder.is_dir() else None


def _has_weights(folder: Path) -> bool:
    return any(folder.glob("*.safetensors")) or any(folder.glob("*/*.safetensors")) or (folder / "model.ckpt").exists()


def local_state(spec: ModelSpec) -> LocalState:
    """What is on disk for this model, without touching the network."""
    if spec.checkpoint:
        path = Path(spec.checkpoint)
        return LocalState("local", path, path.stat().st_size if path.is_file() else 0)
    if spec.local_path:
        path = Path(spec.local_path)
        return LocalState("local", path, _tree_size(path))
    if spec.tiny:
        from .testing.tiny import is_complete  # cheap: builders import torch only when they run

        path = tiny_dir(spec)
        if is_complete(spec.tiny, path):
            return LocalState("built", path, _tree_size(path))
        if path.is_dir():  # an older build, or a folder that is not stablekit's: `models rm` decides which
            return LocalState("partial", path, _tree_size(path))
        return LocalState("missing", None, 0)
    for repo in (spec.repo, *spec.fallbacks):
        cache = repo_cache_dir(repo)
        if not cache.is_dir():
            continue
        size = _tree_size(cache / "blobs")
        snapshot = _snapshot(repo, spec.revision)
        if snapshot and any((snapshot / name).exists() for name in _INDEX_FILES):
            if not _has_weights(snapshot):
                return LocalState("configs", snapshot, size)
            partial = any(p.name.endswith(".incomplete") for p in _children(cache / "blobs"))
            return LocalState("partial" if partial else "downloaded", snapshot, size)
        return LocalState("partial", snapshot, size)
    return LocalState("missing", None, 0)


def _children(folder: Path) -> list[Path]:
    """A folder's entries; none for a folder that is missing or unreadable (a cache made by hand has no blobs/)."""
    try:
        return list(folder.iterdir())
    except OSError:
        return []


def download_patterns(spec: ModelSpec, configs_only: bool = False) -> tuple[list[str] | None, list[str]]:
    """allow/ignore patterns so a pull fetches only what the loader reads (one weight format, one variant).

    `configs_only`: configs and tokenizers, no weights (what a single-file checkpoint of the family needs).
    """
    if configs_only:
        return ["model_index.json", "*.json", "*/*.json", "*/*.txt", "*/*.model", "*/*.jinja"], list(_NEVER)
    if spec.files:
        return list(spec.files), []
    ignore = list(_NEVER)
    if spec.library == "diffusers":
        if spec.loader.endswith("Pipeline"):
            allow = ["model_index.json", "*/*.json", "*/*.txt", "*/*.model", "*/*.jinja"]
            ignore += ["safety_checker/*"]  # stablekit never loads the SD 1.x safety checker
            weights = "*/*.fp16.safetensors" if spec.variant == "fp16" else "*/*.safetensors"
        else:  # a single component repo (VAE)
            allow = ["*.json"]
            weights = "*.fp16.safetensors" if spec.variant == "fp16" else "*.safetensors"
        allow.append(weights)
        if spec.variant != "fp16":
            ignore.append("*.fp16.safetensors")
        ignore += [f"{component}/*" for component in spec.shared]  # loaded from the base model instead
        return allow, ignore
    return ["*.json", "*.safetensors", "*.txt", "*.model", "*.jinja", "*.tiktoken"], ignore


def _hub_error(err: Exception, repo: str) -> StablekitError | None:
    """Translate huggingface_hub's exceptions into errors that name the next step (never a token)."""
    from huggingface_hub import errors as hub_errors

    page = f"https://huggingface.co/{repo}"
    if isinstance(err, hub_errors.GatedRepoError):
        return GatedModelError(
            f"{repo} is gated: its licence must be accepted before download",
            hint=f"accept the licence at {page}, then run 'hf auth login' (or set HF_TOKEN)",
        )
    if isinstance(err, hub_errors.RevisionNotFoundError):
        return ModelUnavailableError(f"{repo} has no revision by that name", hint=f"see {page}/tree/main")
    if isinstance(err, (hub_errors.RepositoryNotFoundError, hub_errors.DisabledRepoError)):
        return ModelUnavailableError(
            f"{repo} is not on the hub (withdrawn, renamed or private)",
            hint="if it is private, run 'hf auth login'; otherwise pass another repo with --model ORG/NAME",
        )
    if isinstance(err, (hub_errors.LocalEntryNotFoundError, hub_errors.OfflineModeIsEnabled)):
        return None  # offline: the caller says what to do
    if isinstance(err, hub_errors.HfHubHTTPError):
        return StablekitError(f"the hub refused {repo}: {err.response.status_code}", hint="try again later")
    return None


def _download(repo: str, revision: str, allow: list[str] | None, ignore: list[str], name: str) -> Path:
    """One snapshot download, with huggingface_hub's failures turned into errors that name the fix."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo, revision=revision, allow_patterns=allow, ignore_patterns=ignore,
                                      cache_dir=hf_hub_cache(), endpoint=os.environ.get("HF_ENDPOINT"),
                                      local_files_only=offline()))
    except Exception as err:  # noqa: BLE001 - translated below or re-raised
        translated = _hub_error(err, repo)
        if translated is None and _is_connection_error(err):
            raise ModelNotDownloadedError(
                f"{name} is not downloaded and the hub cannot be reached" + (" (HF_HUB_OFFLINE)" if offline() else ""),
                hint=f"run 'stablekit models pull {name}' on a machine with network access",
            ) from None
        if translated is None and isinstance(err, OSError) and err.errno in _WRITE_ERRNOS:
            raise writing_error(err, hf_hub_cache(), f"{repo}'s files") from None
        if translated is None:
            raise
        raise translated from None


_WRITE_ERRNOS = (errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR, errno.EEXIST)


def _build_tiny(spec: ModelSpec) -> Path:
    """Build (or reuse) a tiny model inside STABLEKIT_HOME/tiny; write failures said as such."""
    from .testing import tiny

    folder = tiny_dir(spec)
    if (folder.exists() or folder.is_symlink()) and not (folder / tiny.MARKER).is_file():
        raise UsageError(f"{spec.id}: {folder} exists and was not built by stablekit, so it is not replaced",
                         hint="move it away, or give the record another id")
    try:
        return tiny.ensure(spec.tiny, folder)
    except OSError as err:
        if err.errno not in _WRITE_ERRNOS:
            raise
        raise writing_error(err, folder.parent, f"the tiny model {spec.id}") from None


def pull(spec: ModelSpec, *, quiet: bool = False, configs_only: bool = False) -> Path:
    """Put the model's files on disk (download, or build a tiny model) and return the folder."""
    if spec.checkpoint:
        return config_folder(spec)
    if spec.local_path:
        return Path(spec.local_path)
    if spec.tiny:
        return _build_tiny(spec)
    from huggingface_hub.utils import disable_progress_bars

    if quiet:
        disable_progress_bars()
    allow, ignore = download_patterns(spec, configs_only)
    first_error: ModelUnavailableError | None = None
    for repo in (spec.repo, *spec.fallbacks):
        try:
            return _download(repo, spec.revision, allow, ignore, spec.id)
        except ModelUnavailableError as err:
            first_error = first_error or err
    assert first_error is not None
    if spec.fallbacks:
        first_error.message += f" (nor are its fallbacks: {', '.join(spec.fallbacks)})"
    raise first_error


def fetch_adapter(repo: str) -> Path:
    """A LoRA (or other adapter) repository's safetensors, from the cache or the hub."""
    return _download(repo, "main", ["*.safetensors", "*.json"], [], repo)


def _is_connection_error(err: Exception) -> bool:
    from huggingface_hub import errors as hub_errors

    if isinstance(err, (hub_errors.LocalEntryNotFoundError, hub_errors.OfflineModeIsEnabled)):
        return True
    return type(err).__name__ in ("ConnectError", "ConnectTimeout", "ReadTimeout", "ConnectionError")


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def config_folder(spec: ModelSpec) -> Path:
    """Where a single-file checkpoint's configs are: its config record's files on disk (never the network)."""
    if spec.tiny:
        return _build_tiny(spec)
    for repo in (spec.repo, *spec.fallbacks):
        snapshot = _snapshot(repo, spec.revision)
        if snapshot and (snapshot / "model_index.json").is_file():
            return snapshot
    raise ModelNotDownloadedError(
        f"{Path(spec.checkpoint or '').name} needs the configs of {spec.configs_from} ({spec.repo}), not on disk",
        hint=f"run 'stablekit models pull {spec.configs_from} --configs-only' (a few MB) once",
    )


def ensure_local(spec: ModelSpec, *, quiet: bool = False) -> Path:
    """The model's folder, downloading (or building) it first when needed and allowed.

    For a single-file checkpoint it is the folder of configs to load it with.
    """
    from .lockfile import locked_folder  # --locked / STABLEKIT_LOCKED: only the lockfile's files (lockfile.py)

    pinned = locked_folder(spec, quiet)
    if spec.checkpoint:
        return config_folder(spec)
    if pinned is not None:
        return pinned
    state = local_state(spec)
    if state.status in ("downloaded", "built", "local"):
        folder: Path = state.path  # type: ignore[assignment]
    elif spec.repo and offline():
        raise ModelNotDownloadedError(
            f"{spec.id} is not downloaded and HF_HUB_OFFLINE is set",
            hint=f"run 'stablekit models pull {spec.id}' while online",
        )
    else:
        folder = pull(spec, quiet=quiet)
    check_folder(spec, folder)
    return folder


def refetch_hint(spec: ModelSpec) -> str:
    """How to get a model's files again, by where they came from."""
    if spec.local_path:
        return "the folder is yours: copy or convert the model into it again"
    if spec.tiny:
        return f"run 'stablekit models rm {spec.id} --yes' and it is rebuilt on the next run"
    return f"run 'stablekit models rm {spec.id} --yes', then 'stablekit models pull {spec.id}'"


def check_folder(spec: ModelSpec, folder: Path) -> None:
    """Refuse a folder with a damaged file before loading it (cheap: headers and configs), naming the file."""
    from .checkpoints import damaged_file

    if not folder.is_dir():
        return
    found = damaged_file(folder)
    if found:
        path, why = found
        raise StablekitError(f"{spec.id}: {path.relative_to(folder)} in {folder} is {why}",
                             hint=refetch_hint(spec))


def remove(spec: ModelSpec) -> int:
    """Delete the model's files; returns the bytes freed.

    Only what stablekit made (a tiny build, recognised by its marker) or the hub cache entry of the record's
    repos is deleted, each checked to lie inside its folder, with the converted copies kept from them (weights
    cache); local folders and checkpoints never are.
    """
    if spec.local_path or spec.checkpoint:
        raise UsageError(f"{spec.id} is your own file or folder; stablekit does not delete it")
    if spec.tiny:
        from .testing.tiny import MARKER

        folder = tiny_dir(spec)
        if folder.exists() and not (folder / MARKER).is_file():
            raise UsageError(f"{spec.id}: {folder} was not built by stablekit, so it is not deleted",
                             hint="delete it yourself if you are sure")
        folders = [folder]
    else:
        folders = [repo_cache_dir(r) for r in (spec.repo, *spec.fallbacks)]
    from . import weights_cache

    freed = 0
    for folder in folders:
        if folder.is_symlink():
            raise UsageError(f"{spec.id}: {folder} is a symlink; stablekit deletes only folders it made")
        if folder.is_dir():
            freed += _tree_size(folder) + weights_cache.remove_from(folder)
            try:
                shutil.rmtree(folder)
            except OSError as err:
                raise StablekitError(f"cannot delete {folder}: {err.strerror}",
                                     hint="check the folder's permissions") from None
    return freed
