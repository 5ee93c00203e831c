"""The batch manifest: one JSON line per finished, skipped or failed job, appended as it happens.

It is also what a rerun resumes from: a job is done when its latest record says so for the same digest and
output name, and every output it lists is still there with a sidecar recording that digest. Each record is
one `write` of one line, so a reader never sees half of one; a line cut short by SIGKILL is dropped by the
next run before it appends.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from typing import Any

from .errors import OutputError

NAME = "stablekit-batch.jsonl"
STATUSES = ("done", "skipped", "failed", "interrupted")


class Manifest:
    """The manifest file at `path`; `records` are the ones read when it was opened (earlier runs)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser()
        self.records: list[dict[str, Any]] = _read(self.path)
        self._checked = False

    def latest(self) -> dict[str, dict[str, Any]]:
        """The newest earlier record of each job id."""
        return {record["id"]: record for record in self.records}

    def append(self, record: dict[str, Any]) -> None:
        """Add one record as one line (created with its folder on first use); a line the disk cannot take
        whole is cut off again."""
        try:
            text = json.dumps(record, sort_keys=True, default=str, ensure_ascii=False, allow_nan=False)
        except ValueError:
            raise OutputError(f"cannot write the manifest {self.path}: a record holds NaN or infinity",
                              hint="this is a bug in stablekit: please report it") from None
        line = (text + "\n").encode()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if not self._checked:
                _drop_cut_line(self.path)
                self._checked = True
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
            try:
                start = os.fstat(fd).st_size
                try:
                    written = os.write(fd, line)
                except OSError:
                    os.ftruncate(fd, start)
                    raise
                if written != len(line):
                    os.ftruncate(fd, start)
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            finally:
                os.close(fd)
        except OSError as err:
            from .outputs import storage_error

            raise storage_error(err, f"the manifest {self.path}") from None


def _read(path: Path) -> list[dict[str, Any]]:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return []
    except OSError as err:
        raise OutputError(f"cannot read the manifest {path}: {err.strerror}") from None
    records = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a line cut short by a killed run
        if isinstance(record, dict) and isinstance(record.get("id"), str) and record.get("status") in STATUSES:
            records.append(record)
    return records


def _drop_cut_line(path: Path) -> None:
    """A run killed mid-write can leave a last line without its newline: cut it off before appending."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return
    if size == 0:
        return
    with path.open("rb+") as file:
        file.seek(-1, os.SEEK_END)
        if file.read(1) == b"\n":
            return
        file.seek(0)
        data = file.read()
        file.truncate(data.rfind(b"\n") + 1)


def record_key(job, output_dir: str | Path) -> str:
    """The output name a record is valid for: the job's output template under the (absolute) output folder."""
    return str(Path(output_dir).expanduser().resolve() / (job.output or ""))


def is_done(record: dict[str, Any] | None, digest: str, output: str) -> bool:
    """Whether an earlier record shows the job finished with these parameters and its outputs are intact."""
    if not record or record.get("status") not in ("done", "skipped") or record.get("digest") != digest:
        return False
    if record.get("output") != output or not record.get("outputs"):
        return False
    return all(_sidecar_digest(Path(path)) == digest for path in record["outputs"])


def _sidecar_digest(output: Path) -> str | None:
    if not output.exists():
        return None
    try:
        data = json.loads(output.with_name(output.name + ".json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    parameters = data.get("parameters") if isinstance(data, dict) else None
    return parameters.get("job_digest") if isinstance(parameters, dict) else None


def owner(output: Path) -> str | None:
    """The batch job id an existing output's sidecar names (None for a file no batch job wrote)."""
    try:
        data = json.loads(output.with_name(output.name + ".json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    parameters = data.get("parameters") if isinstance(data, dict) else None
    value = parameters.get("job_id") if isinstance(parameters, dict) else None
    return value if isinstance(value, str) else None
