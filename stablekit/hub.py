"""Weights on disk: the hub cache (read without importing huggingface_hub), pulls, removal, hub errors."""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from .errors import GatedModelError, ModelNotDownloadedError, ModelUnavailableError, StablekitError
from .paths import hf_hub_cache, tiny_models_dir
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
    return hf_hub_cache() / ("models--" + repo.replace("/", "--"))


def tiny_dir(spec: ModelSpec) -> Path:
    return tiny_models_dir() / (spec.configs_from or spec.id)


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
        if not ref.is_file():
            return None
        commit = ref.read_text().strip()
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
        built = is_complete(spec.tiny, path)
        return LocalState("built" if built else "missing", path if built else None, _tree_size(path) if built else 0)
    for repo in (spec.repo, *spec.fallbacks):
        cache = repo_cache_dir(repo)
        if not cache.is_dir():
            continue
        size = _tree_size(cache / "blobs")
        snapshot = _snapshot(repo, spec.revision)
        if snapshot and any((snapshot / name).exists() for name in _INDEX_FILES):
            if not _has_weights(snapshot):
                return LocalState("configs", snapshot, size)
            partial = any(p.name.endswith(".incomplete") for p in (cache / "blobs").iterdir())
            return LocalState("partial" if partial else "downloaded", snapshot, size)
        return LocalState("partial", snapshot, size)
    return LocalState("missing", None, 0)


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
                hint=f"run 'stablekit models pull {name}' on a machine with network access"
                if name != repo else "download it on a machine with network access",
            ) from None
        if translated is None:
            raise
        raise translated from None


def pull(spec: ModelSpec, *, quiet: bool = False, configs_only: bool = False) -> Path:
    """Put the model's files on disk (download, or build a tiny model) and return the folder."""
    if spec.checkpoint:
        return config_folder(spec)
    if spec.local_path:
        return Path(spec.local_path)
    if spec.tiny:
        from .testing import tiny

        return tiny.ensure(spec.tiny, tiny_dir(spec))
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
        from .testing import tiny

        return tiny.ensure(spec.tiny, tiny_dir(spec))
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
    if spec.checkpoint:
        return config_folder(spec)
    state = local_state(spec)
    if state.status in ("downloaded", "built", "local"):
        return state.path  # type: ignore[return-value]
    if spec.repo and offline():
        raise ModelNotDownloadedError(
            f"{spec.id} is not downloaded and HF_HUB_OFFLINE is set",
            hint=f"run 'stablekit models pull {spec.id}' while online",
        )
    return pull(spec, quiet=quiet)


def remove(spec: ModelSpec) -> int:
    """Delete the model's files from disk; returns the bytes freed. Local folders are never deleted."""
    if spec.local_path:
        raise StablekitError(f"{spec.id} is your own folder; stablekit does not delete it")
    folders = [tiny_dir(spec)] if spec.tiny else [repo_cache_dir(r) for r in (spec.repo, *spec.fallbacks)]
    freed = 0
    for folder in folders:
        if folder.is_dir():
            freed += _tree_size(folder)
            shutil.rmtree(folder)
    return freed
