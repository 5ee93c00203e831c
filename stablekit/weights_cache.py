"""Converted copies of a pipeline's weights, kept in the dtype a run loads them in.

Why: loading stored float16 weights into float32 (every CPU run of a `variant = "fp16"` model) or bfloat16 (a bf16
CPU, a bf16 GPU) converts every tensor, which costs more than the reading: `--model sd-turbo` on the development
machine's CPU spends 16.8 s importing and loading, 11.1 s with a converted copy (README, "Fast on a CPU"). A
component whose files are already in the run dtype is mapped by safetensors, not copied, and loads in under a
second. So after a load that converted, each converted component is saved once (save_pretrained,
safetensors only) under `STABLEKIT_HOME/cache/weights`, and later loads take it from there: the same values (the
conversion is deterministic, the copy stores its result), hence the same pictures.

An entry is named by what it was made from (the component's weight files: names, sizes, modification times; its
class; the run dtype; the diffusers and transformers versions), so a re-downloaded or edited model makes a new
entry and the old one is removed. The whole cache stays under a budget (least recently used entries go first) and
never fills the disk; `STABLEKIT_WEIGHTS_CACHE=off` turns it off, `=30GB` sets the budget. Writing is best effort:
a full disk, a read-only home or a killed process leave no entry (a temporary folder renamed into place when
complete) and the run goes on.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from .checkpoints import header, numel
from .errors import InputError, UsageError
from .layouts import json_object
from .paths import stablekit_home

GIB = 1024**3
DEFAULT_BUDGET = 24 * GIB
KEEP_FREE = 4 * GIB  # never leave the disk with less than this after writing an entry
MIN_BYTES = 32 * 1024**2  # smaller components convert faster than a copy is worth keeping
META = "stablekit-entry.json"
ENV = "STABLEKIT_WEIGHTS_CACHE"
_SAFETENSORS_CODES = {"float32": "F32", "float16": "F16", "bfloat16": "BF16"}
_FLOAT_CODES = {"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2"}
_UNITS = {"": 1, "B": 1, "KB": 1000, "MB": 1000**2, "GB": 1000**3, "TB": 1000**4,
          "KIB": 1024, "MIB": 1024**2, "GIB": 1024**3, "TIB": 1024**4}
_STALE_TEMP_S = 3600


def cache_dir() -> Path:
    return stablekit_home() / "cache" / "weights"


def budget() -> int:
    """The cache's size limit in bytes from STABLEKIT_WEIGHTS_CACHE (0: off). A value that is not a size is an error
    said once, here, rather than a silently ignored setting."""
    text = os.environ.get(ENV, "").strip()
    if not text or text.lower() in ("on", "1", "yes", "true"):
        return DEFAULT_BUDGET
    if text.lower() in ("off", "0", "no", "false"):
        return 0
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([A-Za-z]*)", text)
    if not match or match.group(2).upper() not in _UNITS:
        raise UsageError(f"{ENV}={text}: not a size", hint="use off, or a size such as 20GB or 500MiB")
    return int(float(match.group(1)) * _UNITS[match.group(2).upper()])


@dataclass(frozen=True)
class Component:
    """One model of a pipeline folder whose stored weights are not in the run dtype."""

    name: str
    library: str
    class_name: str
    source: Path
    key: str
    dtype_name: str
    nbytes: int  # its size in the run dtype

    @property
    def entry(self) -> Path:
        return cache_dir() / self.key


def convertible(folder: Path, dtype_name: str, variant: str | None, skip: set[str]) -> list[Component]:
    """The components of a diffusers pipeline folder that a load in `dtype_name` would convert, big enough to keep.

    Read from model_index.json and the safetensors headers only (no torch): a folder this cannot read yields none.
    """
    index = json_object(folder / "model_index.json")
    found = []
    for name, value in index.items():
        if name.startswith("_") or name in skip or not _is_model_entry(value):
            continue
        component = _component(name, value[0], value[1], folder / name, dtype_name, variant)
        if component:
            found.append(component)
    return found


def convertible_model(folder: Path, dtype_name: str) -> Component | None:
    """A transformers model folder (config.json naming its class) that a load in `dtype_name` would convert."""
    architectures = json_object(folder / "config.json").get("architectures")
    if not isinstance(architectures, list) or len(architectures) != 1 or not isinstance(architectures[0], str):
        return None
    return _component("model", "transformers", architectures[0], folder, dtype_name, None)


def _component(name: str, library: str, class_name: str, subfolder: Path, dtype_name: str,
               variant: str | None) -> Component | None:
    code = _SAFETENSORS_CODES.get(dtype_name)
    files = _weight_files(subfolder, variant)
    headers = [_header(path) for path in files]
    if code is None or not files or any(found is None for found in headers):
        return None
    tensors = [t for found in headers for t in found.values()]
    floats = [t for t in tensors if isinstance(t, dict) and t.get("dtype") in _FLOAT_CODES]
    if not floats or all(t["dtype"] == code for t in floats):
        return None
    nbytes = sum(numel(t) * (4 if code == "F32" else 2) for t in floats)
    if nbytes < MIN_BYTES:
        return None
    try:
        key = _key(library, class_name, dtype_name, files)
    except OSError:  # a file gone since it was listed: the load will say what is wrong
        return None
    return Component(name, library, class_name, subfolder.resolve(), key, dtype_name, nbytes)


def load_kept(components: list[Component], dtype, progress) -> dict:
    """The components that have a kept copy, loaded from it (one that fails to load is removed and left out, so the
    caller loads it the usual way)."""
    loaded = {}
    for component in components:
        entry = component.entry
        if not (entry / META).is_file():
            continue
        try:
            _check_sizes(entry)  # transformers would fill a tensor missing from a swapped file with random values
            loaded[component.name] = _load(component, entry, dtype)
        except Exception as err:  # a damaged entry must never stop a run that the source could serve
            progress.note(f"the kept {component.name} copy in {entry} could not be read ({_first_line(err)}); "
                          "removed, loading from the model's own files")
            shutil.rmtree(entry, ignore_errors=True)
            continue
        _touch(entry)
    return loaded


def keep(modules: dict, components: list[Component], model: str, limit: int, progress,
         in_use: set[str] = frozenset()) -> None:
    """Save each converted component just loaded (`modules` by component name), best effort, within `limit` bytes
    in all and the disk's free space. Entries in `in_use` (the keys this load read its other components from) are
    never evicted to make room: a model bigger than the limit would otherwise rewrite its copies on every run."""
    pending = [component for component in components
               if hasattr(modules.get(component.name), "save_pretrained") and not (component.entry / META).is_file()]
    if not pending or limit <= 0:
        return
    root = cache_dir()
    in_use = set(in_use)
    try:
        root.mkdir(parents=True, exist_ok=True)
        _remove_stale_temporaries(root)  # once per load, not per component
        for component in pending:
            dtype_name = component.dtype_name
            reason = _room_for(root, component, limit, in_use)
            if reason:
                progress.note(f"not keeping a {dtype_name} copy of {model}'s {component.name}: {reason}")
                continue
            progress.stage(f"Keeping a {dtype_name} copy of {model}'s {component.name} "
                           f"({component.nbytes / GIB:.1f} GiB) so later loads skip converting it")
            _write(modules[component.name], component, model, root)
            in_use.add(component.key)
    except Exception as err:  # noqa: BLE001 - a copy that cannot be kept must not fail the run it speeds up
        progress.note(f"{_write_failure(err, root)} (the run goes on; {ENV}=off stops trying)")


def remove_from(source_folder: Path) -> int:
    """Remove the kept copies made from a model folder (its files are being removed); the bytes freed."""
    freed = 0
    prefix = source_folder.resolve()
    for entry, meta in _entries(cache_dir()):
        source = Path(meta["source"]) if meta["source"] else None
        if source and (source == prefix or source.is_relative_to(prefix)):
            freed += meta["bytes"]
            shutil.rmtree(entry, ignore_errors=True)
    return freed


def summary() -> dict:
    """For `stablekit doctor`: where the copies are, how many, their size, the limit (0: off) and any problem."""
    try:
        limit, problem = budget(), None
    except UsageError as err:
        limit, problem = 0, err.message
    found = list(_entries(cache_dir()))
    return {"folder": str(cache_dir()), "copies": len(found), "limit_bytes": limit, "problem": problem,
            "used_bytes": sum(meta["bytes"] for _, meta in found)}


# -- reading -------------------------------------------------------------------------------------------------------

def _is_model_entry(value) -> bool:
    return (isinstance(value, list) and len(value) == 2 and value[0] in ("diffusers", "transformers")
            and isinstance(value[1], str))


def _weight_files(subfolder: Path, variant: str | None) -> list[Path]:
    """The .safetensors files from_pretrained would read: the variant's where it has them, else the plain ones."""
    try:
        files = sorted(p for p in subfolder.glob("*.safetensors") if p.is_file())
    except OSError:
        return []

    def is_variant(path: Path, name: str) -> bool:
        return f".{name}." in path.name or f".{name}-" in path.name

    if variant:
        chosen = [p for p in files if is_variant(p, variant)]
        if chosen:
            return chosen
    return [p for p in files if not any(is_variant(p, v) for v in ("fp16", "bf16", "fp32", "ema", "non_ema"))]


def _header(path: Path) -> dict | None:
    """The file's tensors, or None for a file that is not a readable safetensors file."""
    try:
        return header(path)
    except InputError:
        return None


def _key(library: str, class_name: str, dtype_name: str, files: list[Path]) -> str:
    stats = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    made_from = {"library": library, "class": class_name, "dtype": dtype_name, "files": stats,
                 "folder": str(files[0].parent.resolve()), "versions": _library_versions()}
    return hashlib.sha256(json.dumps(made_from, sort_keys=True).encode()).hexdigest()[:24]


@functools.cache
def _library_versions() -> list[str]:
    """diffusers' and transformers' versions: another version may save or read a component differently."""
    from importlib.metadata import PackageNotFoundError, version

    found = []
    for name in ("diffusers", "transformers"):
        try:
            found.append(version(name))
        except PackageNotFoundError:
            found.append("")
    return found


def _load(component: Component, entry: Path, dtype):
    import importlib

    cls = getattr(importlib.import_module(component.library), component.class_name)
    if component.library == "diffusers":
        from .loading import _dtype_keyword

        keyword = _dtype_keyword()
    else:
        keyword = "dtype"
    return cls.from_pretrained(entry, **{keyword: dtype}, local_files_only=True, use_safetensors=True)


def _check_sizes(entry: Path) -> None:
    """Every file the entry was written with, at the size it was written (a cheap check against a copy truncated,
    replaced or emptied since)."""
    written = json_object(entry / META).get("files")
    if not isinstance(written, dict) or not written:
        raise ValueError("its record of its files is missing")
    for name, size in written.items():
        path = entry / name
        if path.parent != entry or not path.is_file() or path.stat().st_size != size:
            raise ValueError(f"{name} is missing or not the size it was written at")


def _entries(root: Path):
    try:
        children = list(root.iterdir())
    except OSError:
        return
    for child in children:
        if child.name.startswith("."):
            continue
        try:
            meta = json.loads((child / META).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        yield child, _well_formed(meta)


def _well_formed(meta) -> dict:
    """An entry's record as the rest of this module reads it. A record edited into nonsense still names an entry,
    one that matches no model, counts for nothing and is removed when the cache is next written to."""
    meta = meta if isinstance(meta, dict) else {}
    size, source, dtype = meta.get("bytes"), meta.get("source"), meta.get("dtype")
    sound = isinstance(size, int) and size >= 0 and isinstance(source, str) and isinstance(dtype, str)
    if not sound:
        return {"bytes": 0, "source": "", "dtype": "", "damaged": True}
    return meta


def _touch(entry: Path) -> None:
    """Mark an entry used (its folder's mtime), for least-recently-used eviction; a read-only home just skips it."""
    try:
        os.utime(entry)
    except OSError:
        pass


def _first_line(err: BaseException) -> str:
    return (str(err).splitlines() or [type(err).__name__])[0][:200]


# -- writing -------------------------------------------------------------------------------------------------------

def _room_for(root: Path, component: Component, limit: int, in_use: set[str] = frozenset()) -> str | None:
    """Make room within the budget by evicting the least recently used entries, never those in `in_use`; why not,
    if it cannot fit."""
    if component.nbytes > limit:
        return f"{component.nbytes / GIB:.1f} GiB is over the cache's {limit / GIB:.1f} GiB ({ENV})"
    entries = sorted(_entries(root), key=lambda pair: _mtime(pair[0]))
    held = sum(meta["bytes"] for entry, meta in entries if entry.name in in_use)
    if held + component.nbytes > limit:
        return (f"with this model's other copies it would need {(held + component.nbytes) / GIB:.1f} GiB, over the "
                f"cache's {limit / GIB:.1f} GiB ({ENV} sets it)")
    entries = [(entry, meta) for entry, meta in entries if entry.name not in in_use]
    # An entry made from the same folder in the same dtype is an older version of this one, and one whose record is
    # damaged cannot be used: they go first.
    for entry, meta in list(entries):
        if meta.get("damaged") or (meta["source"] == str(component.source) and meta["dtype"] == component.dtype_name):
            shutil.rmtree(entry, ignore_errors=True)
            entries.remove((entry, meta))
    used = held + sum(meta["bytes"] for _, meta in entries)
    while entries and used + component.nbytes > limit:
        entry, meta = entries.pop(0)
        shutil.rmtree(entry, ignore_errors=True)
        used -= meta["bytes"]
    free = shutil.disk_usage(root).free
    if free - component.nbytes < KEEP_FREE:
        return f"the disk would have under {KEEP_FREE // GIB} GiB free ({free / GIB:.1f} GiB free now)"
    return None


def _write(module, component: Component, model: str, root: Path) -> None:
    """save_pretrained into a temporary folder, then one rename: an entry is complete or absent."""
    temporary = root / f".tmp-{os.getpid()}-{component.key}"
    shutil.rmtree(temporary, ignore_errors=True)
    try:
        module.save_pretrained(temporary)
        if not any(temporary.glob("*.safetensors")):
            return  # a class that saved another format: nothing we would load
        files = {path.name: path.stat().st_size for path in temporary.iterdir() if path.is_file()}
        meta = {"source": str(component.source), "component": component.name, "library": component.library,
                "class": component.class_name, "dtype": component.dtype_name, "model": model, "bytes": component.nbytes,
                "created": time.time(), "files": files}
        (temporary / META).write_text(json.dumps(meta), encoding="utf-8")
        try:
            temporary.rename(component.entry)
        except OSError:
            if not (component.entry / META).is_file():  # another process's complete entry won the race: fine
                raise
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


def _write_failure(err: Exception, root: Path) -> str:
    """Why a copy could not be written, in words. safetensors reports a full disk as its own error type with the
    OS error's number in the text, not as an OSError."""
    from .paths import writing_error

    if not isinstance(err, OSError):
        number = re.search(r"os error (\d+)", str(err))
        if not number:
            return f"cannot write a converted copy of the weights in {root}: {_first_line(err)}"
        err = OSError(int(number.group(1)), os.strerror(int(number.group(1))))
    return writing_error(err, root, "a converted copy of the weights").message


def _remove_stale_temporaries(root: Path) -> None:
    """A process killed while writing leaves `.tmp-PID-…`; remove those whose process is gone or that are old."""
    from .launch import running

    for child in root.glob(".tmp-*"):
        try:
            pid = int(child.name.split("-")[1])
        except (IndexError, ValueError):
            pid = 0
        gone = pid <= 0 or not running(pid)
        if pid != os.getpid() and (gone or time.time() - _mtime(child) > _STALE_TEMP_S):
            shutil.rmtree(child, ignore_errors=True)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0
