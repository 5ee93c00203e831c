"""The output sink: the only code that names output files, writes them with their sidecar, and reports them.

Engines hand the sink finished outputs (`Output`: a writer callback, the parameters, the plan); the sink
decides the file name from the job's template, writes the output and its JSON sidecar together (both or
neither), defers Ctrl-C/SIGTERM until both are in place, and reports the result record.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import __version__
from .outputs import OutputOptions, check_writable, finish_before_interrupt, target_path


@dataclass
class Written:
    """What a writer put on disk: the main file (or folder), files that belong to it, facts to report, and
    parameters only known once written (the sidecar records them with the job's)."""

    path: Path
    extra: list[Path] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass
class Output:
    """One finished output as an engine hands it over; nothing is on disk yet."""

    kind: str  # image | video | frames | audio | mesh | text
    extension: str  # used when the job's output name has none
    write: Callable[[Path, bool], Written | Path]  # (target, overwrite) -> what landed, written atomically
    parameters: dict[str, Any]  # the job object of this output plus details; the sidecar's `parameters`
    plan: Any  # the stablekit.planning.Plan that made it
    folder: Path | None  # the model's files
    seed: int | None = None
    name: str = ""  # what {prompt} names the file after
    value: Any = None  # the output in memory (a stage's image, a completion)
    info: dict[str, Any] = field(default_factory=dict)  # extra keys of the result record


class Sink:
    """Writes outputs under `output_dir`, numbering them across the run, and reports each to `on_result`."""

    streams_text = False

    def __init__(self, output_dir: str | Path = ".", *, overwrite: bool = False,
                 on_result: Callable[[dict], None] = lambda item: None, total: int = 1,
                 recorded: dict[str, Any] | None = None) -> None:
        self.output_dir = str(output_dir)
        self.recorded = recorded or {}  # extra sidecar keys (the server that ran the job); never in the output
        self.overwrite = overwrite
        self.on_result = on_result
        self.total = total  # outputs expected in the run: a plain name gets -INDEX when there are several
        self.index = 0
        self.results: list[dict] = []
        self._group: list[tuple[Written, Path, dict]] | None = None  # outputs of a `together` block so far

    def stream(self, piece: str) -> None:
        """Text as it is generated; a file sink writes the whole answer at the end instead."""

    def target(self, job, out: Output, index: int) -> Path:
        options = OutputOptions(output=job.output, output_dir=self.output_dir, overwrite=self.overwrite)
        return target_path(options, model=job.spec.id, seed=out.seed if out.seed is not None else 0, index=index,
                           count=self.total, prompt=out.name or job.request.prompt, extension=out.extension,
                           id=job.id or job.digest())

    def check(self, job, extension: str = ".out") -> None:
        """Before anything loads: the job's output name can be made and its folder written (nothing is created).
        `extension` stands for the output's own ("" for an output that is a folder)."""
        options = OutputOptions(output=job.output, output_dir=self.output_dir, overwrite=self.overwrite)
        path = target_path(options, model=job.spec.id, seed=0, index=0, count=self.total,
                           prompt=job.request.prompt or "x", extension=extension, id=job.id or "x")
        check_writable(path.parent)

    @contextmanager
    def together(self) -> Iterator[None]:
        """Outputs emitted inside are one result (a mesh and its turntable): each is reported once all are in
        place, and if one cannot be written, those already written are removed with their sidecars."""
        if self._group is not None:  # already inside one
            yield
            return
        self._group = group = []
        with finish_before_interrupt():
            try:
                yield
            except BaseException:
                for written, sidecar, _ in group:
                    _remove(written, sidecar)
                raise
            finally:
                self._group = None
            for _, _, item in group:
                self.results.append(item)
                self.on_result(item)

    def emit(self, job, out: Output) -> dict:
        """Write `out` and its sidecar (both or neither) and report it; returns the result record."""
        from .provenance import record
        from .writers.sidecar import write_sidecar

        index = self.index
        path = self.target(job, out, index)
        self.index += 1
        with finish_before_interrupt():
            written = out.write(path, self.overwrite)
            written = written if isinstance(written, Written) else Written(written)
            parameters = {**out.parameters, **written.parameters, "command": job.command,
                          "stablekit_version": __version__}
            try:
                sidecar = write_sidecar(written.path, record(
                    spec=job.spec, model_path=str(out.folder) if out.folder else None, parameters=parameters,
                    plan=out.plan.device_plan, output=written.path.name) | self.recorded)
            except BaseException:
                _remove(written)
                raise
            item = {"path": str(written.path), "sidecar": str(sidecar), "kind": out.kind, "model": job.spec.id,
                    "seed": out.seed, "index": index, "prompt": job.request.prompt, **out.info, **written.info}
            if job.id is not None:
                item["id"] = job.id
            if self._group is not None:
                self._group.append((written, sidecar, item))
            else:
                self.results.append(item)
                self.on_result(item)
        return item


class CaptureSink(Sink):
    """Keeps a stage's outputs in memory for the next stage; forwards them to a real sink when they are kept."""

    def __init__(self, forward: Sink | None = None) -> None:
        super().__init__()
        self.forward = forward
        self.values: list[Any] = []

    def emit(self, job, out: Output) -> dict:
        self.values.append(out.value)
        item = self.forward.emit(job, out) if self.forward is not None else {"kind": out.kind, "path": None}
        self.results.append(item)
        return item


def _remove(written: Written, *more: Path) -> None:
    """Take back what a writer put down when its sidecar cannot follow: an output lands whole or not at all."""
    import shutil

    for path in [written.path, *written.extra, *more]:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


class TextStreamSink(Sink):
    """`stablekit text` in a terminal or pipe: the answer streams to stdout as it comes, no file is written;
    with `as_json`, one JSON record per answer instead of the stream."""

    def __init__(self, write: Callable[[str], None], *, as_json: bool = False, note=lambda message: None,
                 on_result: Callable[[dict], None] = lambda item: None) -> None:
        super().__init__(on_result=on_result)
        self.write, self.as_json, self.note = write, as_json, note
        self.streams_text = not as_json
        self.completions: list[Any] = []

    def check(self, job, extension: str = ".out") -> None:
        """Nothing is written to files here."""

    def stream(self, piece: str) -> None:
        self.write(piece)

    def emit(self, job, out: Output) -> dict:
        completion = out.value
        self.completions.append(completion)
        item = {"path": None, "sidecar": None, "kind": "text", "model": job.spec.id, "seed": out.seed,
                "index": len(self.results), "prompt": job.request.prompt, **completion.to_dict()}
        if self.as_json:
            self.on_result(item)
        else:
            self.write("\n")
            self.note(completion.summary())
        self.results.append(item)
        return item
