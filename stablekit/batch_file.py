"""Job files: JSON Lines of jobs, read and checked whole before anything loads, each job given its id and seed.

A line is a job object (`{"command": "image", "prompt": "a fox", "model": "sdxl-turbo", "seed": 7}`); blank
lines and lines starting with `#` are skipped. `--set KEY=VALUE` defaults and `--preset`s lie under every
line. A job without an `id` gets one from the digest of its normalised parameters; a job without a seed
(that draws one) gets one derived from its id, so a rerun, or another worker, makes the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import string
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any

from .errors import InputError, UsageError
from .jobs import COMMANDS, Job, field_types, job_from, output_count, with_seed
from .outputs import JOB_ID, TEMPLATE_FIELDS
from .params import accepts

# Where a job runs, not what it makes: left out of the digest, so a rerun with another --vram resumes.
_PLACEMENT = ("vram", "offload")
# The default name is {id} plus the format's extension where a bare name would mean something else (a video
# without an extension is a folder of frames).
_DEFAULT_SUFFIX = {"video": ".mp4"}


@dataclass(frozen=True)
class Entry:
    """One job of a batch: where it came from, the job (id, output and seed decided) and its digest."""

    job: Job
    where: str = ""  # "jobs.jsonl line 3": what messages about the job name
    line: int = 0  # 1-based line of the job file (or prompt of a prompts file)
    digest: str = ""  # what the sidecar and the manifest record; a rerun skips a job whose digest is unchanged

    @property
    def id(self) -> str:
        return self.job.id or ""

    @property
    def label(self) -> str:
        """How progress lines name the job: its id, else where it came from."""
        return self.job.id or self.where


def digest_of(job: Job) -> str:
    """The resume key: a hash of everything that decides the job's outputs (not its id, output name or
    placement)."""
    return job.with_request(**{key: None for key in _PLACEMENT}).digest()


def derived_seed(job_id: str) -> int:
    """The seed of a job that names none: the same for the same id, on every machine and every run."""
    return int.from_bytes(hashlib.sha256(f"stablekit-seed:{job_id}".encode()).digest()[:4], "big")


def read_lines(source: str, stdin: IO[str]) -> tuple[str, list[tuple[int, str]]]:
    """(the file's name for messages, [(line number, text)]) of the lines that hold jobs."""
    if source == "-":
        name, text = "<stdin>", stdin.read()
    else:
        path = Path(source).expanduser()
        name = source
        if not path.is_file():
            raise InputError(f"job file {source}: no such file")
        try:
            text = path.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError as err:
            raise InputError(f"job file {source}: not UTF-8 text ({err.reason} at byte {err.start})") from None
        except OSError as err:
            raise InputError(f"job file {source}: cannot read it ({err.strerror})") from None
    lines = [(number, line) for number, line in enumerate(text.splitlines(), 1)
             if line.strip() and not line.lstrip().startswith("#")]
    return name, lines


def parse_sets(items: Iterable[str]) -> dict[str, str]:
    """--set KEY=VALUE (repeatable) as raw text by key; each value is typed per command by `typed`."""
    known = set().union(*(field_types(command) for command in COMMANDS))
    found: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UsageError(f"--set {item!r}: expected KEY=VALUE", hint="e.g. --set num_inference_steps=4")
        if key not in known:
            raise UsageError(f"--set {key}: not a job key of any command",
                             hint=f"job keys: {', '.join(sorted(known))}")
        found[key] = value
    return found


def typed(annotation: Any, raw: str) -> Any:
    """A --set value as the key's type wants it: JSON (7, 0.5, true, null, ["a"]) where that fits, else text."""
    try:
        value = json.loads(raw)
    except ValueError:
        return raw
    if accepts(annotation, value) or not accepts(annotation, raw):
        return value
    return raw  # "16" for a text field stays text


def load_entries(source: str, stdin: IO[str], *, sets: dict[str, str] | None = None,
                 presets: Iterable[str] = ()) -> list[Entry]:
    """Every job of the file, checked: a bad line is a UsageError naming the file, the line and the key."""
    name, lines = read_lines(source, stdin)
    by_command = _presets_by_command(presets)
    entries = [_entry(f"{name} line {number}", number, _json_line(f"{name} line {number}", text), sets or {},
                      by_command) for number, text in lines]
    if not entries:
        raise UsageError(f"{name}: no jobs (every line is blank or a # comment)",
                         hint='one JSON object per line, e.g. {"command": "image", "prompt": "a fox"}')
    return _checked(name, entries, by_command)


def entries_from_sidecars(folder: str, *, sets: dict[str, str] | None = None,
                          presets: Iterable[str] = ()) -> list[Entry]:
    """`batch --from-sidecars DIR`: the jobs that made DIR's outputs, each named as its outputs were (a
    one-shot command's default `{prompt}-{seed}`, or the recorded name), so a re-render can be set beside
    the originals and compared file by file."""
    from .reproduce import jobs_from_sidecars

    by_command = _presets_by_command(presets)
    entries = []
    for number, (sidecar, job) in enumerate(jobs_from_sidecars(folder), 1):
        values = job.to_dict()
        output = values.get("output")
        values["output"] = Path(output).name if output and Path(output).is_absolute() else output or "{prompt}-{seed}"
        entries.append(_entry(f"{folder}: {sidecar}", number, values, sets or {}, by_command))
    return _checked(f"--from-sidecars {folder}", entries, by_command)


def _presets_by_command(presets: Iterable[str]) -> dict[str, str]:
    from .preset_files import find_preset

    by_command: dict[str, str] = {}
    for preset in presets:
        command = find_preset(preset).command
        if command in by_command:
            raise UsageError(f"--preset {preset} and --preset {by_command[command]} are both for "
                             f"`stablekit {command}`: give one per command")
        by_command[command] = preset
    return by_command


def _checked(name: str, entries: list[Entry], by_command: dict[str, str]) -> list[Entry]:
    unused = sorted(set(by_command) - {entry.job.command for entry in entries})
    if unused:
        raise UsageError(f"--preset {by_command[unused[0]]} is for `stablekit {unused[0]}`, and {name} has no "
                         f"{unused[0]} jobs")
    _check_unique(name, entries)
    return entries


def _json_line(where: str, text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as err:
        raise UsageError(f"{where}: not valid JSON ({err})",
                         hint='one JSON object per line, e.g. {"command": "image", "prompt": "a fox"}') from None


def _entry(where: str, number: int, line: Any, sets: dict[str, str], presets: dict[str, str]) -> Entry:
    if not isinstance(line, dict):
        raise UsageError(f"{where}: a job is a JSON object, got {type(line).__name__}")
    command = line.get("command", sets.get("command"))
    if command is None:
        raise UsageError(f"{where}: missing 'command' (one of {', '.join(COMMANDS)})")
    if command not in COMMANDS:
        raise UsageError(f"{where}: 'command' must be one of {', '.join(COMMANDS)}, got {command!r}")
    types = field_types(command)
    values = {key: typed(types[key], raw) for key, raw in sets.items() if key in types and key != "command"}
    values.update(line)
    values["command"] = command
    try:
        job = job_from(command, values, where=where, preset=presets.get(command))
    except UsageError as err:
        if not err.message.startswith(where):
            err.message = f"{where}: {err.message}"
        raise
    job = _decided(job, where)
    return Entry(job, where, number, digest_of(job))


def _decided(job: Job, where: str) -> Job:
    """The job with its id, seed and output name decided (`{id}` written into the name)."""
    job_id = job.id
    if job_id is None:
        job_id = f"{job.command}-{digest_of(job)[:12]}"
    elif not JOB_ID.fullmatch(job_id):
        raise UsageError(f"{where}: 'id' {job_id!r} cannot name a file",
                         hint="use letters, digits, '_' and '-' (up to 100), not starting with '-'")
    if job.seed is None and with_seed(job) is not job:  # a job that draws random numbers, with no seed given
        job = job.with_request(seed=derived_seed(job_id))
    output = job.output or ("{id}-{index}" if output_count(job) > 1 else "{id}") + _DEFAULT_SUFFIX.get(job.command, "")
    return replace(job, id=job_id, output=_with_id(output, job_id, where))


def _with_id(template: str, job_id: str, where: str) -> str:
    """`template` with {id} written out (so an image kept beside a video takes the job's name too); other
    fields stay for the sink."""
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as err:
        raise UsageError(f"{where}: 'output' {template!r} is not a valid template ({err})") from None
    text = ""
    for literal, field, spec, conversion in parts:
        text += literal.replace("{", "{{").replace("}", "}}")
        if field is None:
            continue
        if field not in TEMPLATE_FIELDS:
            raise UsageError(f"{where}: 'output' has an unknown field {{{field}}}",
                             hint=f"fields: {', '.join('{' + f + '}' for f in TEMPLATE_FIELDS)}")
        if field == "id":
            text += job_id
        else:
            text += "{" + field + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
    return text


def _check_unique(name: str, entries: list[Entry]) -> None:
    seen: dict[str, Entry] = {}
    for entry in entries:
        first = seen.setdefault(entry.id, entry)
        if first is not entry:
            raise UsageError(f"{entry.where}: 'id' {entry.id!r} is {first.where.removeprefix(name + ' ')}'s too",
                             hint="ids name the outputs: give each job its own 'id' (identical jobs without one "
                                  "share the id of their parameters; give them different seeds)")
