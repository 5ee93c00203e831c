"""Output naming and safe writing, the same for every modality.

Names made from prompts are sanitised so they can never leave the output folder; files are written under
a temporary name and renamed into place; an existing file is never replaced unless asked (a numbered
name is chosen instead).
"""

from __future__ import annotations

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


def _template_fields(template: str) -> list[str]:
    try:
        return [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as err:
        raise UsageError(f"--output {template!r}: bad template ({err})") from None


def check_template(options: OutputOptions, extensions: tuple[str, ...]) -> None:
    """Reject unknown {fields} and extensions up front, before any model is loaded."""
    if not options.output:
        return
    for name in _template_fields(options.output):
        if name not in TEMPLATE_FIELDS:
            raise UsageError(f"--output: unknown field {{{name}}}",
                             hint=f"fields: {', '.join('{' + f + '}' for f in TEMPLATE_FIELDS)}")
    suffix = Path(options.output).suffix.lower()
    if suffix and suffix not in extensions:
        raise UsageError(f"--output: '{suffix}' is not a supported format here", hint=f"use {', '.join(extensions)}")


def target_path(options: OutputOptions, *, model: str, seed: int, index: int, count: int, prompt: str,
                extension: str, id: str = "") -> Path:
    """Where output number `index` of `count` goes (before numbering around existing files); `id` is the
    job's id (a batch line's), or its digest where it has none."""
    base = Path(options.output_dir).expanduser()
    template = options.output or "{prompt}-{seed}"
    plain = options.output is not None and not _template_fields(options.output)
    now = time.localtime()
    values = {"id": id if JOB_ID.fullmatch(id) else slug(id), "model": slug(model), "seed": str(seed),
              "index": str(index), "prompt": slug(prompt), "date": time.strftime("%Y%m%d", now),
              "time": time.strftime("%H%M%S", now)}
    name = template.format(**values)
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


def temporary_path(path: Path) -> Path:
    """A new empty temporary sibling of `path` that carries this process's id (see remove_strays)."""
    fd, name = tempfile.mkstemp(prefix=f".{path.stem}.{os.getpid()}.", suffix=f".partial{path.suffix}",
                                dir=path.parent)
    os.close(fd)
    return Path(name)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_strays(folder: Path, alive: Callable[[int], bool] = _alive) -> list[Path]:
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


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def _numbered(path: Path, n: int) -> Path:
    return path.with_name(f"{path.stem}-{n}{path.suffix}")


def write_atomic(path: Path, write: Callable[[Path], None], *, overwrite: bool = False) -> Path:
    """Write through `write(tmp)` to a temporary sibling, then move it into place; returns the final path.

    Without `overwrite`, an existing file is kept and the new one gets the next free numbered name; the
    no-clobber move is a hard link, so two processes writing the same name cannot lose either file.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"cannot create {path.parent}: {err.strerror}") from None
    tmp = temporary_path(path)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get the usual permissions
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
            except OSError:  # a file system without hard links
                if candidate.exists():
                    n += 1
                    candidate = _numbered(path, n)
                    continue
                os.replace(tmp, candidate)
                return candidate
    except OSError as err:
        raise OutputError(f"cannot write {path}: {err.strerror}") from None
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def finish_before_interrupt() -> Iterator[None]:
    """Let Ctrl-C wait until an output and its sidecar are both written and reported, then interrupt."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        raise KeyboardInterrupt
