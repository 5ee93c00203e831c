"""Deterministic tiny random-weight models in the real repo layouts, so tests and smoke runs need no downloads.

This module builds them atomically and knows when a folder holds a finished build; the builders themselves live
in `diffusion` (SD, SDXL, SD3, SVD, Stable Audio), `lm` (StableLM) and `triposr`, their parts in `tokenizers`
and `components`.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import shutil
import tempfile
import warnings

from . import diffusion, lm, triposr
from .tokenizers import CLIP_MAX_LENGTH, LM_CONTEXT, T5_MAX_LENGTH, TEXT_VOCAB_SIZE

__all__ = ["TINY_KINDS", "MARKER", "FORMAT_VERSION", "CLIP_MAX_LENGTH", "T5_MAX_LENGTH", "LM_CONTEXT",
           "TEXT_VOCAB_SIZE", "build", "ensure", "is_complete"]

TINY_KINDS: tuple[str, ...] = ("sd", "sdxl", "sd3", "svd", "audio", "lm", "triposr", "taesd", "taesd3")

MARKER = ".stablekit-tiny"
# Bump when any builder changes, so `ensure` rebuilds folders made by older code.
FORMAT_VERSION = 2


def build(kind: str, folder: str | os.PathLike) -> pathlib.Path:
    """Build tiny model `kind` into `folder`, replacing what is there, and return the folder.

    Built in a temporary sibling and renamed into place, so a reader never sees half a model.
    """
    folder = pathlib.Path(folder)
    tmp = _build_temp(kind, folder)
    if not _install(tmp, folder):
        _replace(tmp, folder)
    return folder


def ensure(kind: str, folder: str | os.PathLike) -> pathlib.Path:
    """Return `folder` if it holds a complete build of `kind`, else build it there.

    Two processes may race: one wins the rename, the other discards its copy and uses the winner's.
    """
    folder = pathlib.Path(folder)
    _check_kind(kind)
    if is_complete(kind, folder):
        return folder
    tmp = _build_temp(kind, folder)
    if _install(tmp, folder):
        return folder
    if is_complete(kind, folder):  # another process finished first: use its copy
        shutil.rmtree(tmp, ignore_errors=True)
        return folder
    _replace(tmp, folder)
    return folder


def is_complete(kind: str, folder: str | os.PathLike) -> bool:
    """Whether `folder` holds a finished build of `kind` made by this format version (the marker comes last)."""
    try:
        marker = json.loads((pathlib.Path(folder) / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return marker == _marker(kind)


def _marker(kind: str) -> dict:
    return {"kind": kind, "format": FORMAT_VERSION}


def _check_kind(kind: str) -> None:
    if kind not in TINY_KINDS:
        raise ValueError(f"unknown tiny model kind {kind!r}; choose one of {', '.join(TINY_KINDS)}")


def _build_temp(kind: str, folder: pathlib.Path) -> pathlib.Path:
    """Build into a fresh temporary sibling of `folder` (same filesystem, so the rename is atomic)."""
    _check_kind(kind)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    try:
        with _quiet(kind):
            _BUILDERS[kind](tmp)
        (tmp / MARKER).write_text(json.dumps(_marker(kind)) + "\n")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return tmp


def _install(tmp: pathlib.Path, folder: pathlib.Path) -> bool:
    """Rename `tmp` to `folder`; False when `folder` already exists with content (rename refuses then)."""
    try:
        os.rename(tmp, folder)
    except OSError:
        if not folder.exists():
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return False
    return True


def _replace(tmp: pathlib.Path, folder: pathlib.Path) -> None:
    """Swap `tmp` in for an existing `folder`: move the old one aside first, then delete it.

    Readers may find no folder for the instant between the two renames; a racing builder that fills that gap
    wins, and `tmp` is dropped (both hold the same complete build).
    """
    trash = pathlib.Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".old", dir=folder.parent))
    try:
        with contextlib.suppress(FileNotFoundError):
            os.rename(folder, trash / "old")
        try:
            os.rename(tmp, folder)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            if not folder.exists():
                raise
    finally:
        shutil.rmtree(trash, ignore_errors=True)


@contextlib.contextmanager
def _quiet(kind: str):
    """Silence library warnings and progress bars while building, restoring the previous settings after.

    diffusers is left alone for the language model, whose build would otherwise pay seconds to import it.
    """
    import transformers.utils.logging as tlog

    loggers = [tlog]
    if kind != "lm":
        import diffusers.utils.logging as dlog

        loggers.append(dlog)
    saved = [(log.get_verbosity(), log.is_progress_bar_enabled()) for log in loggers]
    for log in loggers:
        log.set_verbosity_error()
        log.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for log, (level, bar) in zip(loggers, saved, strict=True):
            log.set_verbosity(level)
            if bar:
                log.enable_progress_bar()


_BUILDERS = {
    "sd": diffusion.build_sd,
    "sdxl": diffusion.build_sdxl,
    "sd3": diffusion.build_sd3,
    "svd": diffusion.build_svd,
    "audio": diffusion.build_audio,
    "lm": lm.build_lm,
    "triposr": triposr.build_triposr,
    "taesd": diffusion.build_taesd,
    "taesd3": diffusion.build_taesd3,
}
