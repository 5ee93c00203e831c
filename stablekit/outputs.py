"""Output naming and safe writing, the same for every modality.

Names made from prompts are sanitised so they can never leave the output folder; files are written under
a temporary name and renamed into place; an existing file is never replaced unless asked (a numbered
name is chosen instead). Templates and the target folder are checked before any model loads; a write that
fails says why in words ("the disk is full") with the fix.

`-o` names a folder when it ends in `/` or names an existing folder (and has no {fields}): the outputs get
their default names inside it. An output that is itself a folder (video's PNG frames: a name without an
extension) keeps its name as given, so for video `-o frames/` is still the frames folder.
"""

from __future__ import annotations

import errno
import os
import re
import signal
import string
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .errors import OutputError, UsageError

TEMPLATE_FIELDS = ("id", "model", "seed", "index", "prompt", "date", "time")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
# A job id names files as it is: letters, digits, '_' and '-' (no dot: it would read as an extension).
JOB_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,99}")


def slug(text: str, limit: int = 60) -> str:
    """A file-name-safe fragment: no separators, no leading dots, never empty."""
    cleaned = _UNSAFE.sub("-", text).strip(".-_")
    cleaned = re.sub(r"-{2,}", "-", cleaned)[:limit].rstrip(".-_")
    return cleaned.lower() or "untitled"


@dataclass(frozen=True)
class OutputOptions:
    """-o/--output, --output-dir and --overwrite, as given."""

    output: str | None = None
    output_dir: str = "."
    overwrite: bool = False


_FIELD_HINT = "fields: " + ", ".join("{" + f + "}" for f in TEMPLATE_FIELDS) + "; seed and index take number " \
    "formats such as {index:03d}"
_NAME_BYTES = 255  # the longest file name most file systems hold


def _template_fields(template: str) -> list[str]:
    try:
        return [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as err:
        raise UsageError(f"--output {template!r}: bad template ({err})", hint=_FIELD_HINT) from None


def _values(*, id: str, model: str, seed: int, index: int, prompt: str) -> dict[str, object]:
    """What the template's fields stand for: seed and index as numbers (so {index:03d} works), the rest
    as file-name-safe text."""
    now = time.localtime()
    return {"id": id if JOB_ID.fullmatch(id) else slug(id), "model": slug(model), "seed": int(seed),
            "index": int(index), "prompt": slug(prompt), "date": time.strftime("%Y%m%d", now),
            "time": time.strftime("%H%M%S", now)}


def is_folder_name(output: str | None) -> bool:
    """`-o NAME/`: a folder, whatever exists."""
    return bool(output) and output.endswith(("/", os.sep))


def check_template(options: OutputOptions, extensions: tuple[str, ...]) -> None:
    """Reject unknown {fields}, bad format specs, names too long and unsupported extensions up front, before
    any model is loaded."""
    if not options.output:
        return
    template = options.output
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as err:
        raise UsageError(f"--output {template!r}: bad template ({err})", hint=_FIELD_HINT) from None
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if name not in TEMPLATE_FIELDS:
            raise UsageError(f"--output: unknown field {{{name}}}", hint=_FIELD_HINT)
        if conversion is not None:
            raise UsageError(f"--output {template!r}: {{{name}!{conversion}}}: conversions are not filled in",
                             hint=_FIELD_HINT)
        if any(c in (spec or "") for c in "{}/\\\0"):
            raise UsageError(f"--output {template!r}: the format of {{{name}}} may not hold braces or path "
                             "separators", hint=_FIELD_HINT)
    sample = _values(id="x" * 16, model="m" * 40, seed=2**32 - 1, index=9999, prompt="p" * 60)
    try:
        name = template.format(**sample)
    except (ValueError, TypeError, KeyError, IndexError, OverflowError) as err:
        raise UsageError(f"--output {template!r}: bad template ({err})", hint=_FIELD_HINT) from None
    for part in Path(name).parts:
        if len(part.encode()) > _NAME_BYTES:
            raise UsageError(f"--output {template!r}: a name would be longer than {_NAME_BYTES} bytes",
                             hint="use a shorter name or a narrower format")
    suffix = "" if is_folder_name(template) else Path(template).suffix.lower()
    if suffix and suffix not in extensions:
        raise UsageError(f"--output: '{suffix}' is not a supported format here", hint=f"use {', '.join(extensions)}")


def target_path(options: OutputOptions, *, model: str, seed: int, index: int, count: int, prompt: str,
                extension: str, id: str = "") -> Path:
    """Where output number `index` of `count` goes (before numbering around existing files); `id` is the
    job's id (a batch line's), or its digest where it has none.

    A plain `-o` that ends in `/` or names an existing folder is a folder: the default names go inside it;
    except for an output that is itself a folder (`extension` ""), whose name it is.
    """
    base = Path(options.output_dir).expanduser()
    template = options.output or "{prompt}-{seed}"
    plain = options.output is not None and not _template_fields(options.output)
    if plain and extension and (is_folder_name(template) or (base / Path(template).expanduser()).is_dir()):
        base, template, plain = base / Path(template).expanduser(), "{prompt}-{seed}", False
    values = _values(id=id, model=model, seed=seed, index=index, prompt=prompt)
    try:
        name = template.format(**values)
    except (ValueError, TypeError, KeyError, IndexError, OverflowError) as err:
        raise UsageError(f"--output {template!r}: bad template ({err})", hint=_FIELD_HINT) from None
    path = Path(name)
    if not path.suffix:
        path = path.with_name(path.name + extension)
    if plain and count > 1:
        path = path.with_name(f"{path.stem}-{index}{path.suffix}")
    full = path if path.is_absolute() else base / path
    prefix = template.split("{", 1)[0]  # the part of the template the user wrote out literally
    literal_dir = Path(prefix) if prefix.endswith(("/", os.sep)) else Path(prefix).parent
    root = (literal_dir if literal_dir.is_absolute() else base / literal_dir).resolve()
    if not full.resolve().is_relative_to(root):
        raise OutputError(f"output name {full} would leave {root}")
    return full


# `.NAME.PID.RANDOM.partial.EXT`: a temporary output of process PID, named so a later run can find strays.
_TEMPORARY = re.compile(r"^\..*\.(?P<pid>\d+)\.[A-Za-z0-9_]+\.partial(\.[^.]*)?$")

# What an OSError met while writing an output means, in words, and what to do about it.
_REASONS = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is used up",
            errno.EROFS: "the file system is read-only", errno.EACCES: "permission denied",
            errno.EPERM: "permission denied", errno.EIO: "input/output error (a failing disk or a lost network share?)",
            errno.ENOTDIR: "a file is in the way of a folder", errno.EEXIST: "a file is in the way",
            errno.ENAMETOOLONG: "the name is too long", errno.EFBIG: "the file is too large for the file system"}
_HINTS = {errno.ENOSPC: "free some space, or write to another disk with --output-dir",
          errno.EDQUOT: "free some space, or write to another disk with --output-dir",
          errno.EROFS: "write to a writable folder with --output-dir",
          errno.EACCES: "write to a folder you own with --output-dir, or make this one writable",
          errno.EPERM: "write to a folder you own with --output-dir, or make this one writable",
          errno.ENAMETOOLONG: "use a shorter -o name",
          errno.EIO: "check the disk (or the network share), then run again",
          errno.ENOTDIR: "move the file away, or choose another -o / --output-dir",
          errno.EEXIST: "move the file away, or choose another -o / --output-dir",
          errno.EFBIG: "write to another file system with --output-dir"}


class StorageError(OutputError):
    """An output could not be written because of the file system (full, read-only, not permitted...)."""

    def __init__(self, message: str, hint: str | None = None, errno_: int | None = None) -> None:
        super().__init__(message, hint)
        self.errno = errno_


def storage_error(err: OSError, path: Path | str, what: str = "write") -> StorageError:
    """`cannot write PATH: the disk is full`, with the fix, for an OSError met writing (or creating) `path`."""
    reason = _REASONS.get(err.errno or 0) or err.strerror or str(err)
    return StorageError(f"cannot {what} {path}: {reason}", hint=_HINTS.get(err.errno or 0), errno_=err.errno)


def temporary_path(path: Path) -> Path:
    """A new empty temporary sibling of `path` that carries this process's id (see remove_strays)."""
    fd, name = tempfile.mkstemp(prefix=f".{path.stem}.{os.getpid()}.", suffix=f".partial{path.suffix}",
                                dir=path.parent)
    os.close(fd)
    return Path(name)


def temporary_folder(path: Path, suffix: str = "") -> Path:
    """A new empty temporary sibling folder of `path` carrying this process's id (see remove_strays)."""
    return Path(tempfile.mkdtemp(prefix=f".{path.name}.{os.getpid()}.", suffix=f".partial{suffix}", dir=path.parent))


def check_writable(folder: Path) -> None:
    """Before anything loads: can outputs be written into `folder` (made when missing)? The nearest folder
    that exists must be a folder, on a writable file system, writable by this user; nothing is created."""
    existing = Path(folder).expanduser().absolute()
    while not (existing.exists() or existing.is_symlink()) and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UsageError(f"cannot write into {folder}: {existing} is a file, not a folder",
                         hint="choose another -o / --output-dir, or move the file")
    try:
        read_only = bool(os.statvfs(existing).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):  # no statvfs (Windows): the write itself will say
        read_only = False
    if read_only:
        raise storage_error(OSError(errno.EROFS, os.strerror(errno.EROFS)), folder, "write into")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise storage_error(OSError(errno.EACCES, os.strerror(errno.EACCES)), folder, "write into")


def pid_alive(pid: int) -> bool:
    """Whether process `pid` exists (someone else's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_strays(folder: Path, alive: Callable[[int], bool] = pid_alive) -> list[Path]:
    """Delete temporary outputs that killed stablekit processes left in `folder` (only stablekit's own
    temporary names, and only those whose process is gone, as `alive` tells); returns what was removed."""
    import shutil

    removed = []
    if not folder.is_dir():
        return removed
    for entry in folder.iterdir():
        match = _TEMPORARY.match(entry.name)
        if not match or alive(int(match["pid"])):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


def current_umask() -> int:
    """The process's umask (reading it means setting it: it is put straight back)."""
    current = os.umask(0)
    os.umask(current)
    return current


def _numbered(path: Path, n: int) -> Path:
    return path.with_name(f"{path.stem}-{n}{path.suffix}")


def write_atomic(path: Path, write: Callable[[Path], None], *, overwrite: bool = False) -> Path:
    """Write through `write(tmp)` to a temporary sibling, then move it into place; returns the final path.

    Without `overwrite`, an existing file is kept and the new one gets the next free numbered name; the
    no-clobber move is a hard link, so two processes writing the same name cannot lose either file. An
    OSError becomes a StorageError that says why; the temporary file never stays.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise storage_error(err, path.parent, "create") from None
    try:
        tmp = temporary_path(path)
    except OSError as err:
        raise storage_error(err, path) from None
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes 0600; outputs get the usual permissions
        if overwrite:
            os.replace(tmp, path)
            return path
        candidate, n = path, 1
        while True:
            try:
                os.link(tmp, candidate)
                return candidate
            except FileExistsError:
                n += 1
                candidate = _numbered(path, n)
            except OSError as err:
                if err.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOSYS, errno.EXDEV, errno.EMLINK):
                    raise
                # a file system without hard links
                if candidate.exists():
                    n += 1
                    candidate = _numbered(path, n)
                    continue
                os.replace(tmp, candidate)
                return candidate
    except OSError as err:
        raise storage_error(err, path) from None
    finally:
        tmp.unlink(missing_ok=True)


_DEFERRED = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def finish_before_interrupt() -> Iterator[None]:
    """Let Ctrl-C and SIGTERM wait until an output and its sidecar are both written and reported; then the
    signal is delivered again to whatever handled it before (Ctrl-C: KeyboardInterrupt; the CLI's SIGTERM
    handler: the same, exit 143). Nested uses defer to the outermost."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = {}
    for signum in _DEFERRED:
        previous[signum] = signal.signal(signum, lambda number, frame: received.append(number))
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if received:
        signum = received[0]
        if previous[signum] in (signal.SIG_IGN, None):
            return
        if signum == signal.SIGINT and previous[signum] is signal.SIG_DFL:
            raise KeyboardInterrupt
        signal.raise_signal(signum)
