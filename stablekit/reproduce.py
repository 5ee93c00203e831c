"""Running a file's recorded job again, and re-rendering a folder from its sidecars.

A sidecar's `parameters` are a job object, so reproducing a file is running that one job through the runner
(on this machine's device plan unless told otherwise) and keeping the output that matches the file. The job
runs under its recorded output name in a scratch folder, so even the embedded record comes out the same and
an identical run gives identical bytes.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .console import Progress
from .errors import StablekitError, UsageError
from .info import FileRecord, NoRecordError, original_parameters, read_record
from .outputs import check_writable, storage_error
from .sink import Sink


class UnusableRecordError(StablekitError):
    """The file has no stablekit record to run (exit 2: like a usage error, nothing was tried)."""

    exit_code = 2


@dataclass
class Reproduced:
    """What `reproduce` made: the new output (None when only verified), and the verdict with --verify."""

    path: Path | None
    verdict: Any = None  # stablekit.verify.Verdict

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"path": str(self.path) if self.path else None}
        if self.verdict is not None:
            data.update(self.verdict.to_dict())
        return data


def reproduction(record: FileRecord, *, device: str | None = None, dtype: str | None = None):
    """The job to run for this file and which of its outputs is the file: (job, index).

    Images re-render only the batch the file was in (a batch is computed together, so it is what decides the
    last bits); audio waveforms of one job are always computed together, so the whole job runs.
    """
    from .jobs import job_from_record

    if record.parameters is None:
        what = "AUTOMATIC1111 parameters" if record.a1111 else "a ComfyUI graph"
        raise UnusableRecordError(f"{record.path}: has {what}, not a stablekit record, so there is no job to run",
                                  hint=f"`stablekit info --json {record.path}` gives the nearest job")
    parameters = original_parameters(record)
    index = parameters.get("index") if isinstance(parameters.get("index"), int) else 0
    if parameters.get("command") == "image" and isinstance(parameters.get("seed"), int):
        size = max(1, int(parameters.get("batch_size") or 1))
        start = index - index % size
        parameters.update(seed=(parameters["seed"] + start) % 2**32,
                          num_images=min(size, int(parameters.get("num_images") or 1) - start))
        index -= start
    parameters.update(_inputs_found(record, parameters))
    # Only the file itself: no kept first frame, no turntable.
    for key, off in (("keep_image", False), ("turntable", None)):
        if key in parameters:
            parameters[key] = off
    output = parameters.get("output")
    if isinstance(output, str) and Path(output).is_absolute():
        parameters["output"] = Path(output).name  # the scratch folder holds it (the embedded name changes)
    if device is not None:
        parameters["device"] = device
    if dtype is not None:
        parameters["dtype"] = dtype
    try:
        job = job_from_record(parameters, f"{record.path.name} (recorded job)")
    except UsageError as err:
        raise UnusableRecordError(err.message, hint=err.hint) from None
    return job, index


def _inputs_found(record: FileRecord, parameters: dict[str, Any]) -> dict[str, Any]:
    """Input files recorded by a relative name are looked for here, then beside the file."""
    found = {}
    for key in ("image", "mask"):
        name = parameters.get(key)
        if isinstance(name, str) and not Path(name).is_absolute() and not Path(name).exists():
            beside = record.path.parent / name
            if beside.exists():
                found[key] = str(beside)
    return found


class _KeepSink(Sink):
    """A sink that writes only output number `keep` of the run (the file being reproduced)."""

    def __init__(self, output_dir: Path, keep: int, total: int) -> None:
        super().__init__(output_dir, total=total)
        self.keep, self.seen, self.kept = keep, 0, None

    def emit(self, job, out) -> dict:
        number = self.seen
        self.seen += 1
        if number != self.keep:
            return {"kind": out.kind}
        self.kept = super().emit(job, out)
        return self.kept


def reproduce(path: str | Path, *, output: str | None = None, verify: bool = False, device: str | None = None,
              dtype: str | None = None, progress: Progress = Progress()) -> Reproduced:
    """Run the job recorded in `path` again; with `verify`, compare the result with `path`.

    The result is kept at `output`, else (without `verify`) beside the working folder as NAME-reproduced.EXT;
    `verify` alone keeps nothing.
    """
    from . import runner
    from .jobs import output_count
    from .verify import compare, explain

    source = Path(path)
    try:
        record = read_record(source)
    except NoRecordError as err:
        raise UnusableRecordError(err.message, hint=err.hint) from None
    job, keep = reproduction(record, device=device, dtype=dtype)
    target = Path(output) if output else (None if verify else _free(Path.cwd() / _reproduced_name(source)))
    if target is not None and target.exists():
        raise UsageError(f"-o {target}: already exists", hint="choose another name")
    scratch_parent = target.parent if target is not None else None
    try:
        if scratch_parent is not None:
            check_writable(scratch_parent)  # before the model loads
            scratch_parent.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=f".stablekit-reproduce.{os.getpid()}.", suffix=".partial",
                                        dir=scratch_parent))
    except OSError as err:
        raise storage_error(err, scratch_parent or tempfile.gettempdir(), "write into") from None
    try:
        sink = _KeepSink(scratch, keep, output_count(job))
        runner.run([job], sink, progress)
        if sink.kept is None:
            raise StablekitError(f"{source}: the recorded job made {sink.seen} outputs, none numbered {keep}")
        made = Path(sink.kept["path"])
        verdict = None
        if verify:
            verdict = compare(source, made, _tokens_of(job))
            new_sidecar = _read_json(Path(sink.kept["sidecar"]))
            verdict.expected = explain(record.sidecar, new_sidecar)
        kept = _place(made, target) if target is not None else None
        return Reproduced(kept, verdict)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _tokens_of(job):
    """For a text job, a function that splits text into the model's tokens (each with the text it covers), so a
    verdict names the first differing token; None for other jobs, or when the tokenizer gives no offsets."""
    if job.command != "text":
        return None
    from . import hub

    try:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(hub.ensure_local(job.spec), local_files_only=True,
                                                  trust_remote_code=job.request.trust_remote_code)
        tokenizer("a", add_special_tokens=False, return_offsets_mapping=True)
    except (OSError, ValueError, NotImplementedError, StablekitError):
        return None

    def split(text: str) -> list[str]:
        spans = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        starts = sorted({0, *(start for start, _ in spans[1:])})
        return [text[a:b] for a, b in zip(starts, [*starts[1:], len(text)], strict=True)]

    return split


def _reproduced_name(source: Path) -> str:
    suffix = "" if source.is_dir() else source.suffix
    stem = source.name if source.is_dir() else source.stem
    return f"{stem}-reproduced{suffix}"


def _free(path: Path) -> Path:
    candidate, n = path, 1
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")
    return candidate


def _place(made: Path, target: Path) -> Path:
    """Move the output (and its sidecar) to `target`; files that belong with it (an OBJ's material and
    texture) keep their names beside it, since the output refers to them by name."""
    target.parent.mkdir(parents=True, exist_ok=True)
    sidecar = made.with_name(made.name + ".json")
    companions = [p for p in made.parent.iterdir() if p not in (made, sidecar)]  # the scratch holds only this output
    made.rename(target)
    if sidecar.exists():
        sidecar.rename(target.with_name(target.name + ".json"))
    for extra in companions:
        destination = target.parent / extra.name
        if not destination.exists():
            extra.rename(destination)
    return target


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def jobs_from_sidecars(folder: str | Path) -> list:
    """The jobs that made the outputs in `folder`, read from their JSON sidecars, as (sidecar name, job):
    each job once (the outputs of one job, e.g. four images of one prompt, give that one job back), in the
    order of the files' names.

    What `stablekit batch --from-sidecars DIR` runs; a sidecar that is not stablekit's is skipped, one that
    is stablekit's but cannot be read as a job is an error naming the file.
    """
    from .jobs import job_from_record

    folder = Path(folder)
    if not folder.is_dir():
        raise UsageError(f"--from-sidecars {folder}: not a folder")
    jobs, seen = [], set()
    for sidecar in sorted(folder.glob("*.json")):
        data = _read_json(sidecar)
        if not data or not isinstance(data.get("parameters"), dict) or "command" not in data["parameters"]:
            continue
        output = sidecar.with_name(sidecar.name[: -len(".json")])
        record = FileRecord(output, parameters=data["parameters"], source=f"sidecar {sidecar.name}", sidecar=data)
        job = job_from_record(original_parameters(record), sidecar.name)
        key = (job.digest(), job.output)
        if key not in seen:
            seen.add(key)
            jobs.append((sidecar.name, job))
    if not jobs:
        raise UsageError(f"--from-sidecars {folder}: no stablekit sidecars (NAME.EXT.json) in it")
    return jobs

