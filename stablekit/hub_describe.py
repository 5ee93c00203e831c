"""What a hub repo in no catalog is, read before its weights download: its index and config files, its file
listing, and the parameter counts in its safetensors headers (a byte range each)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from . import hub
from .errors import ModelNotDownloadedError, ModelUnavailableError
from .hub import _INDEX_FILES, _NEVER, _download, _has_weights, _hub_error, _snapshot


@dataclass(frozen=True)
class RepoFiles:
    """A hub repo that is in no catalog, as far as it is known before its weights are on disk."""

    folder: Path  # the cache snapshot holding at least its configs
    listing: list[str] | None  # the repo's file names (None when read from the cache alone)
    counts: dict[str, float] | None  # millions of parameters per component, from the safetensors headers


# What tells a repo's kind and size: the index files and the component configs (kilobytes, needed anyway).
_LAYOUT_FILES = ["model_index.json", "config.json", "config.yaml", "*/config.json", "tokenizer_config.json",
                 "chat_template.jinja"]


def describe_repo(repo: str, revision: str = "main") -> RepoFiles:
    """Fetch (or find in the cache) the files that say what a repo is, before any weights are downloaded."""
    from .checkpoints import parameter_counts
    from .lockfile import locked_commit  # --locked: the configs of the locked commit (lockfile.py)

    revision = locked_commit(repo) or revision
    snapshot = _snapshot(repo, revision)
    if snapshot and any((snapshot / name).is_file() for name in _INDEX_FILES):
        if _has_weights(snapshot):
            return RepoFiles(snapshot, None, parameter_counts(snapshot))
        if hub.offline():  # only its configs: enough to say what it is, not how big
            return RepoFiles(snapshot, None, None)
        folder = snapshot  # configs from an earlier look: the listing and sizes still come from the hub
    elif hub.offline():
        raise ModelNotDownloadedError(
            f"{repo} is not downloaded and HF_HUB_OFFLINE is set, so stablekit cannot read what model it is",
            hint=f"run 'stablekit models pull {repo}' while online")
    else:
        folder = _fetch_layout_files(repo, revision)
    listing = _listing(repo, revision)
    return RepoFiles(folder, listing, _remote_counts(repo, revision, listing))


def _fetch_layout_files(repo: str, revision: str) -> Path:
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    bars = not are_progress_bars_disabled()
    disable_progress_bars()  # a few kilobytes: no bar
    try:
        folder = _download(repo, revision, _LAYOUT_FILES, list(_NEVER), repo)
    finally:
        if bars:
            enable_progress_bars()
    if not any((folder / name).is_file() for name in _INDEX_FILES):
        raise ModelUnavailableError(f"{repo} has no model_index.json, config.json or config.yaml: not a model "
                                    "stablekit can read", hint=f"see https://huggingface.co/{repo}/tree/{revision}")
    return folder


def _api():
    from huggingface_hub import HfApi

    return HfApi(endpoint=os.environ.get("HF_ENDPOINT"))


def _listing(repo: str, revision: str) -> list[str]:
    try:
        return _api().list_repo_files(repo, revision=revision)
    except Exception as err:  # noqa: BLE001 - translated below or re-raised
        translated = _hub_error(err, repo)
        if translated is None:
            raise
        raise translated from None


def _remote_counts(repo: str, revision: str, listing: list[str]) -> dict[str, float] | None:
    """Millions of parameters per component, from the safetensors headers on the hub (a few KB each)."""
    from huggingface_hub import errors as hub_errors

    files = [name for name in listing if name.endswith(".safetensors") and not name.startswith("safety_checker/")
             and name.count("/") <= 1]
    components: dict[str, list[str]] = {}
    for name in files:
        components.setdefault(name.split("/")[0] if "/" in name else "model", []).append(name)
    counts: dict[str, float] = {}
    api = _api()
    for component, names in components.items():
        plain = [n for n in names if ".fp16." not in n] or names  # one weight set per component
        total = 0
        for name in plain:
            try:
                header = api.parse_safetensors_file_metadata(repo, name, revision=revision)
            except hub_errors.SafetensorsParsingError:
                raise ModelUnavailableError(f"{repo}: {name} is not a safetensors file",
                                            hint="the repo is damaged; pick another model") from None
            total += sum(header.parameter_count.values())
        if total:
            counts[component] = round(total / 1e6, 2)
    return counts or None
