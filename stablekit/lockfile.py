"""stablekit.lock: the exact model files a project renders with (repo, commit, and every file's size and
sha256), so CI loads the same bytes next year and offline. With --locked or STABLEKIT_LOCKED=1, a model loads
only from its locked commit, and a file whose hash differs from the lock is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .errors import ModelNotDownloadedError, StablekitError, UsageError
from .registry import ModelSpec

LOCKFILE = "stablekit.lock"
VERSION = 1
_LOCKING: ContextVar[bool] = ContextVar("stablekit_locking", default=False)


@dataclass
class Locked:
    """One model as locked: where its files come from and each file's size and sha256."""

    id: str
    source: str  # hub | built | local
    files: dict[str, tuple[int, str]]  # relative path -> (size, sha256)
    repo: str | None = None
    revision: str | None = None
    commit: str | None = None


@dataclass
class Lock:
    path: Path
    sha256: str
    models: dict[str, Locked] = field(default_factory=dict)

    def find(self, spec: ModelSpec) -> Locked | None:
        found = self.models.get(spec.id)
        if found is None and spec.repo:
            found = next((m for m in self.models.values() if m.repo == spec.repo), None)
        return found


# --- on or off -----------------------------------------------------------------------------------------------


def locked() -> bool:
    """Whether this run loads only locked files: --locked (for the run in hand) or STABLEKIT_LOCKED=1."""
    return _LOCKING.get() or os.environ.get("STABLEKIT_LOCKED", "").lower() in ("1", "true", "yes", "on")


@contextmanager
def locking(on: bool = True) -> Iterator[None]:
    """Load only locked files for the runs inside (what --locked does); nothing changes when `on` is False."""
    token = _LOCKING.set(_LOCKING.get() or on)
    try:
        yield
    finally:
        _LOCKING.reset(token)


def start_locking():
    """Lock until the returned function is called (a command's --locked, from parsing to its end)."""
    token = _LOCKING.set(True)
    return lambda: _LOCKING.reset(token)


def find_lockfile(start: Path | None = None) -> Path | None:
    """STABLEKIT_LOCKFILE, else the nearest stablekit.lock in this folder or a parent (a project's root)."""
    if os.environ.get("STABLEKIT_LOCKFILE"):
        return Path(os.environ["STABLEKIT_LOCKFILE"]).expanduser()
    folder = (start or Path.cwd()).resolve()
    for candidate in (folder, *folder.parents):
        if (candidate / LOCKFILE).is_file():
            return candidate / LOCKFILE
    return None


def active() -> dict[str, str] | None:
    """The lockfile a locked run uses, as its sidecars record it ({path, sha256}); None when not locked."""
    if not locked():
        return None
    lock = load(required=True)
    return {"path": str(lock.path), "sha256": lock.sha256}


# --- reading and writing ---------------------------------------------------------------------------------------


def load(path: Path | None = None, *, required: bool = False) -> Lock:
    """Read a lockfile (the nearest one by default); an empty lock when there is none and it is not required."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]

    path = path or find_lockfile()
    if path is None or not path.is_file():
        if required:
            raise UsageError(f"--locked: no {LOCKFILE} here or in a parent folder" if path is None
                             else f"--locked: {path} does not exist",
                             hint="run 'stablekit lock MODEL' first (or set STABLEKIT_LOCKFILE)")
        return Lock(path or Path(LOCKFILE), "")
    raw = path.read_bytes()
    try:
        data = tomllib.loads(raw.decode("utf-8"))
        models = {key: Locked(id=key, source=entry["source"], repo=entry.get("repo"),
                              revision=entry.get("revision"), commit=entry.get("commit"),
                              files={f["path"]: (int(f["size"]), f["sha256"]) for f in entry.get("files", [])})
                  for key, entry in data.get("models", {}).items()}
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as err:
        raise UsageError(f"{path}: not a stablekit lockfile ({err})",
                         hint="write it again with 'stablekit lock'") from None
    return Lock(path, hashlib.sha256(raw).hexdigest(), models)


def write(lock: Lock) -> Path:
    """Write the lockfile as TOML (models sorted, files sorted: the same lock gives the same bytes)."""
    from .outputs import write_atomic

    lines = ["# Written by `stablekit lock`: the exact model files to render with. Check it in; run with --locked.",
             f"version = {VERSION}", ""]
    for key in sorted(lock.models):
        model = lock.models[key]
        lines.append(f"[models.{_key(key)}]")
        for name in ("source", "repo", "revision", "commit"):
            if getattr(model, name) is not None:
                lines.append(f"{name} = {json.dumps(getattr(model, name))}")
        lines.append("files = [")
        for rel, (size, sha) in sorted(model.files.items()):
            lines.append(f"  {{ path = {json.dumps(rel)}, size = {size}, sha256 = \"{sha}\" }},")
        lines += ["]", ""]
    text = "\n".join(lines)
    return write_atomic(lock.path, lambda tmp: tmp.write_text(text, encoding="utf-8"), overwrite=True)


def _key(key: str) -> str:
    return key if key.replace("-", "").replace("_", "").isalnum() else json.dumps(key)


# --- locking models ---------------------------------------------------------------------------------------------


def models_of_jobs(files: list[str]) -> list[str]:
    """The models that job files (a batch .jsonl / .json job, or a preset .toml) use, stages included."""
    from .jobs import job_from

    names: list[str] = []
    for name in files:
        path = Path(name)
        if path.suffix == ".toml":
            from .preset_files import load_preset

            jobs = [job_from(load_preset(str(path)).command, {}, preset=str(path), where=str(path))]
        else:
            try:
                lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
                objects = [json.loads(line) for line in lines]
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
                raise UsageError(f"--from {path}: cannot read job objects ({err})",
                                 hint="one JSON job object per line, or a preset .toml") from None
            jobs = [job_from(o.get("command", ""), o, where=f"{path}:{n}") for n, o in enumerate(objects, 1)]
        for job in jobs:
            names += [spec.id for spec in (job.spec, *stage_models(job))]
    return list(dict.fromkeys(names))


def stage_models(job) -> list[ModelSpec]:
    """Models a job loads besides its own: the SDXL refiner, the fp16-safe SDXL VAE, the image model that
    draws the first frame (text-to-video) or the picture (text-to-3D)."""
    from .registry import load_registry

    registry, request, found = load_registry(), job.request, []
    image = job.spec if job.command == "image" else None
    if job.command == "image" and request.refiner:
        found.append(registry.resolve(request.refiner_model, "image"))
    if job.command in ("video", "mesh") and not request.image:
        image = registry.resolve(request.image_model, "image")
        found.append(image)
    if image is not None and image.family == "sdxl" and not image.tiny:  # SDXL in fp16 decodes with the fp16-fix VAE
        from .engines.image import _FP16_FIX_VAE

        found.append(registry.get(_FP16_FIX_VAE))
    return found


def lock_models(names: list[str], *, path: Path | None = None, progress=None) -> Lock:
    """Lock each model (and the models its stages use) into the lockfile at `path`, downloading what is not on
    disk; models locked before are kept."""
    from . import hub
    from .jobs import job_from
    from .registry import load_registry

    registry = load_registry()
    lock = load(path) if path is None or path.is_file() else Lock(path, "")
    lock.path = path or lock.path
    specs: list[ModelSpec] = []
    for name in names:
        spec = registry.resolve(name)
        specs.append(spec)
        if spec.modality in ("image", "video", "mesh") and "vae" not in spec.tasks:
            specs += stage_models(job_from(spec.modality, {"model": name}, where=name))
    with locking(False):
        for spec in {s.id: s for s in specs}.values():
            if progress is not None:
                progress.stage(f"Locking {spec.id}")
            if spec.checkpoint:  # the weights file itself; its configs come from the family's record
                checkpoint = Path(spec.checkpoint)
                lock.models[spec.id] = Locked(spec.id, "file", {checkpoint.name: (checkpoint.stat().st_size,
                                                                                  file_sha256(checkpoint))})
                continue
            folder = hub.ensure_local(spec, quiet=True)
            lock.models[spec.id] = _entry(spec, folder)
    write(lock)
    return load(lock.path)


def _entry(spec: ModelSpec, folder: Path) -> Locked:
    files = {p.relative_to(folder).as_posix(): (p.stat().st_size, file_sha256(p))
             for p in sorted(folder.rglob("*")) if p.is_file() and not p.name.endswith(".incomplete")}
    if spec.tiny:
        return Locked(spec.id, "built", files)
    if spec.local_path:
        return Locked(spec.id, "local", files)
    return Locked(spec.id, "hub", files, repo=spec.repo, revision=spec.revision, commit=folder.name)


# --- loading locked files ---------------------------------------------------------------------------------------


def locked_folder(spec: ModelSpec, quiet: bool = False) -> Path | None:
    """The hook in hub.ensure_local: None when not locked; else the model's folder at its locked commit, fetched
    (exactly the locked files) when missing, every file checked against its locked sha256. A single-file
    checkpoint has its file checked, and None is returned (its configs come from its family's record)."""
    if not locked():
        return None
    from . import hub

    lock = load(required=True)
    entry = lock.find(spec)
    if entry is None:
        raise StablekitError(f"--locked: {spec.id} is not in {lock.path}",
                             hint=f"run 'stablekit lock {spec.id}' and check the lockfile in")
    if spec.checkpoint:
        check(Path(spec.checkpoint).parent, entry)
        return None
    folder = _folder(spec, entry)
    if _missing(folder, entry):
        if entry.source != "hub":
            folder = hub.pull(spec, quiet=quiet) if spec.tiny else folder
        elif hub.offline():
            raise ModelNotDownloadedError(
                f"--locked: {spec.id} at commit {entry.commit[:12]} is not (all) downloaded and HF_HUB_OFFLINE is set",
                hint="run 'stablekit models pull --locked' while online")
        else:
            folder = pull_locked(spec, entry, quiet=quiet)
    check(folder, entry)
    return folder


def pull_locked(spec: ModelSpec, entry: Locked, quiet: bool = False) -> Path:
    """Download exactly the locked files of `spec` at the locked commit."""
    from . import hub

    if entry.source != "hub" or not entry.repo or not entry.commit:
        return hub.pull(spec, quiet=quiet)
    pinned = replace(spec, repo=entry.repo, revision=entry.commit, files=tuple(sorted(entry.files)), fallbacks=())
    return hub.pull(pinned, quiet=quiet)


def pull_all(names: list[str] | None = None, quiet: bool = False) -> list[Path]:
    """`models pull --locked`: every locked model (or those named), exactly as locked, each checked."""
    from .registry import load_registry

    lock = load(required=True)
    registry = load_registry()
    wanted = names or sorted(lock.models)
    folders = []
    for name in wanted:
        entry = lock.models.get(name) or lock.find(registry.resolve(name))
        if entry is None:
            raise UsageError(f"{name} is not in {lock.path}", hint=f"run 'stablekit lock {name}'")
        if entry.source == "file":  # a single-file checkpoint: the user's own file, nothing to download
            check(Path(entry.id).parent, entry)
            folders.append(Path(entry.id))
            continue
        spec = _spec_for(entry, registry)
        folder = _folder(spec, entry)
        if _missing(folder, entry):
            folder = pull_locked(spec, entry, quiet=quiet)
        check(folder, entry)
        folders.append(folder)
    return folders


def _spec_for(entry: Locked, registry) -> ModelSpec:
    spec = registry.find(entry.id)
    if spec is not None:
        return spec
    if entry.repo:  # a hub repo locked by its id: no need to read its configs from the hub first
        template = registry.template(modality="image") or next(iter(registry))
        return replace(template, id=entry.repo, name=entry.repo, repo=entry.repo, revision=entry.commit or "main",
                       tiny=None, local_path=None, fallbacks=(), shared=(), variant=None)
    return registry.resolve(entry.id)


def _folder(spec: ModelSpec, entry: Locked) -> Path:
    from . import hub

    if entry.source == "hub" and entry.repo and entry.commit:
        return hub.repo_cache_dir(entry.repo) / "snapshots" / entry.commit
    if entry.source == "built":
        return hub.tiny_dir(spec)
    return Path(spec.local_path or entry.id)


def _missing(folder: Path, entry: Locked) -> bool:
    return not folder.is_dir() or any(not (folder / rel).is_file() for rel in entry.files)


def check(folder: Path, entry: Locked) -> None:
    """Refuse any locked file whose size or sha256 differs from the lock, naming the file and both hashes."""
    for rel, (size, sha) in sorted(entry.files.items()):
        path = folder / rel
        if not path.is_file():
            raise StablekitError(f"--locked: {entry.id}: {rel} is missing from {folder}",
                                 hint="run 'stablekit models pull --locked' to fetch the locked files")
        found = file_sha256(path)
        if found != sha or path.stat().st_size != size:
            raise StablekitError(
                f"--locked: {entry.id}: {path} has sha256 {found}, the lockfile says {sha}",
                hint="the file changed on disk: delete it and run 'stablekit models pull --locked', or if the "
                     "change is intended, run 'stablekit lock' again")


# --- hashing, cached by size and mtime -------------------------------------------------------------------------

_CACHE: dict[str, Any] = {}


def file_sha256(path: Path) -> str:
    """sha256 of a file, hashed once and cached by path, size and mtime under STABLEKIT_HOME."""
    from .paths import stablekit_home

    real = path.resolve()  # a hub snapshot's files are links into its blobs
    stat = real.stat()
    cache_path = stablekit_home() / "hashes.json"
    cache = _CACHE.get(str(cache_path))
    if cache is None:
        try:
            cache = json.loads(cache_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            cache = {}
        _CACHE[str(cache_path)] = cache
    known = cache.get(str(real))
    if isinstance(known, list) and known[:2] == [stat.st_size, stat.st_mtime_ns]:
        return known[2]
    digest = hashlib.sha256()
    with real.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    cache[str(real)] = [stat.st_size, stat.st_mtime_ns, digest.hexdigest()]
    try:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_path.with_name(f".hashes.{os.getpid()}.json")
        tmp.write_text(json.dumps(cache), encoding="utf-8")
        os.replace(tmp, cache_path)
    except OSError:
        pass  # a read-only home only costs hashing again next time
    return digest.hexdigest()


def locked_commit(repo: str) -> str | None:
    """The hook in hub_describe.describe_repo: a hub repo named by its id is read at its locked commit."""
    if not locked():
        return None
    entry = next((m for m in load(required=True).models.values() if m.repo == repo and m.commit), None)
    return entry.commit if entry else None
