"""Batches: many jobs of any modality, each model loaded once, a failing job recorded while the rest go on.

`run_batch` takes the checked entries of a job file (stablekit.batch_file), skips those the manifest shows
done (stablekit.manifest), plans the rest (nothing loads; a bad line stops everything here), groups them by
model and runs them through one session pool (stablekit.batch_run), appending one manifest record per job as
it ends. `run_jobs` is the same loop for `image --prompts-file`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from .batch_file import Entry
from .batch_progress import BatchProgress
from .batch_run import Driver, Interrupted, Outcome, Planned, record_of
from .errors import InputError, StablekitError, UsageError
from .manifest import Manifest, is_done, owner, record_key
from .sink import Sink

__all__ = ["BatchSink", "Interrupted", "Outcome", "by_model", "dry_run", "failure", "plan_entries", "run_batch",
           "run_jobs", "split_done"]


class BatchSink(Sink):
    """Outputs of batch jobs: numbered within their job, the job's id and digest in every sidecar, and an
    earlier output of the same job replaced in place (an unrelated file is never overwritten)."""

    def __init__(self, output_dir: str | Path = ".", *, overwrite: bool = False,
                 on_result: Callable[[dict], None] = lambda item: None, recorded: dict[str, Any] | None = None) -> None:
        super().__init__(output_dir, overwrite=overwrite, on_result=on_result, recorded=recorded)
        self.entry: Entry | None = None

    def begin(self, entry: Entry) -> None:
        from .jobs import output_count

        self.entry, self.index, self.total = entry, 0, output_count(entry.job)

    def emit(self, job, out) -> dict:
        entry = self.entry
        if entry is None:
            return super().emit(job, out)
        out = replace(out, parameters={**out.parameters, "job_id": entry.id, "job_digest": entry.digest})
        own = owner(self.target(job, out, self.index)) == entry.id
        saved, self.overwrite = self.overwrite, self.overwrite or own
        try:
            return super().emit(job, out)
        finally:
            self.overwrite = saved


def plan_entries(entries: list[Entry], hardware=None, *, strict: bool = False) -> list[Planned]:
    """Plan every entry (nothing loads). A UsageError is a bad line: raised, naming it, so nothing runs. A
    missing input file or a job that cannot fit is that job's failure, unless `strict`."""
    from .devices import probe
    from .runner import plan_job

    probed: dict[str | None, object] = {}  # each device the jobs name, probed once (cuda:1: GPU 1's memory)
    planned = []
    for entry in entries:
        device = entry.job.request.device
        if hardware is None and device not in probed:
            probed[device] = probe(device)
        try:
            planned.append(Planned(entry, plan_job(entry.job, hardware or probed[device])))
        except StablekitError as err:
            if strict or (isinstance(err, UsageError) and not isinstance(err, InputError)):
                if not strict and entry.where and not err.message.startswith(entry.where):
                    err.message = f"{entry.where}: {err.message}"
                raise
            planned.append(Planned(entry, error=err))
    return planned


def by_model(planned: list[Planned]) -> list[Planned]:
    """Jobs grouped by model in order of first appearance (file order within a model); a group that draws its
    first images with another group's model runs right after it, so they share the loaded stage."""
    groups: dict[str, list[Planned]] = {}
    for item in planned:
        groups.setdefault(item.entry.job.spec.id, []).append(item)
    order = list(groups)
    for model in list(groups):
        stages = [stage.spec.id for item in groups[model] if item.plan for stage in item.plan.stages]
        host = next((m for m in stages if m in groups and m != model), None)
        if host is not None and order.index(host) < order.index(model):
            order.remove(model)
            order.insert(order.index(host) + 1, model)
    return [item for model in order for item in groups[model]]


def split_done(entries: list[Entry], manifest: Manifest | None, output_dir) -> tuple[list[Entry], list[Entry]]:
    """(to run, done): done when the manifest's latest record of the id matches and its outputs are intact."""
    latest = manifest.latest() if manifest else {}
    run, done = [], []
    for entry in entries:
        finished = is_done(latest.get(entry.id), entry.digest, record_key(entry.job, output_dir))
        (done if finished else run).append(entry)
    return run, done


def dry_run(entries: list[Entry], manifest: Manifest | None, output_dir, hardware=None) -> list[dict[str, Any]]:
    """Per model: the jobs that would run, those skipped as done, those that would fail, and each distinct
    device plan (described as `--dry-run` shows one). Nothing loads."""
    from .planning import describe
    from .runner import engine_for

    run, done = split_done(entries, manifest, output_dir)
    planned = by_model(plan_entries(run, hardware))
    models: dict[str, dict[str, Any]] = {}
    seen: set[tuple] = set()

    def model(spec_id: str) -> dict[str, Any]:
        return models.setdefault(spec_id, {"model": spec_id, "run": [], "skip": [], "fail": [], "plans": []})

    for item in planned:
        summary = model(item.entry.job.spec.id)
        if item.plan is None:
            summary["fail"].append({"id": item.entry.id, "error": item.error.message})
            continue
        summary["run"].append(item.entry.id)
        for part in (*item.plan.stages, item.plan):
            key = engine_for(part.job.command).session_key(part)
            if key not in seen:
                seen.add(key)
                summary["plans"].append(describe(part))
    for entry in done:
        model(entry.job.spec.id)["skip"].append(entry.id)
    return list(models.values())


def run_batch(entries: list[Entry], *, output_dir: str | Path, manifest: Manifest, progress: BatchProgress,
              overwrite: bool = False, fail_fast: bool = False, on_record: Callable[[dict], None] = lambda r: None,
              hardware=None, driver: Callable[..., Any] = Driver, sink: BatchSink | None = None) -> Outcome:
    """Run a job file's entries: skip what is done, plan the rest (a bad line raises before anything loads),
    then run them by model, recording each in the manifest and handing it to `on_record`. `driver` runs the
    planned jobs (Driver's signature; stablekit.distributed.RayOptions.driver() hands them to Ray); `sink`
    writes the outputs (a BatchSink into `output_dir` by default)."""
    from .outputs import check_writable, remove_strays
    from .runner import check_outputs

    output_dir = Path(output_dir).expanduser().resolve()
    run, done = split_done(entries, manifest, output_dir)
    planned = by_model(plan_entries(run, hardware))
    sink = sink or BatchSink(output_dir, overwrite=overwrite)
    check_outputs([item.plan for item in planned if item.plan is not None], sink)
    check_writable(manifest.path.parent)
    removed = [path for folder in _folders(entries, manifest, output_dir) for path in remove_strays(folder)]
    if removed:
        progress.say(f"removed {len(removed)} temporary file{'s' if len(removed) != 1 else ''} left by a killed run")
    outcome = Outcome(manifest=manifest.path)
    latest = manifest.latest()

    def record(item: dict[str, Any]) -> None:
        manifest.append(item)
        outcome.records.append(item)
        on_record(item)

    for entry in done:
        previous = latest[entry.id]
        record(record_of(entry, "skipped", outputs=previous["outputs"], plan=previous.get("plan"),
                       key=record_key(entry.job, output_dir), text=previous.get("text")))
    try:
        with progress.running(len(entries), skipped=len(done)):
            driver(sink, progress, fail_fast=fail_fast, output_dir=output_dir, previous=latest,
                   record=record).run(planned)
    except Interrupted as stop:
        stop.outcome = outcome
        raise
    return outcome


def run_jobs(jobs: list, sink: Sink, console, hardware=None) -> list[dict]:
    """Several jobs of one command (`image --prompts-file`) through the batch loop, into the command's own sink
    (its names, numbering and seeds) without a manifest: every job is planned first and any planning error
    stops them all; a job that fails at run time is reported, the rest still run, and the run ends in an error
    naming the failed ones. Returns the sink's results, like runner.run."""
    from .outputs import remove_strays
    from .runner import check_outputs

    progress = BatchProgress(console)
    entries = [Entry(job, f"prompt {number}", number) for number, job in enumerate(jobs, 1)]
    planned = plan_entries(entries, hardware, strict=True)
    check_outputs([item.plan for item in planned], sink)
    remove_strays(Path(sink.output_dir).expanduser())
    shown = sink.on_result
    sink.on_result = lambda item: progress.above(lambda: shown(item))
    outcome = Outcome()
    try:
        with progress.running(len(entries)):
            Driver(sink, progress, record=outcome.records.append).run(planned)
    finally:
        sink.on_result = shown
    if outcome.failed:
        raise failure(outcome, "prompts")
    return sink.results


def failure(outcome: Outcome, what: str = "jobs") -> StablekitError:
    """The error a batch with failed jobs ends with (exit 1, after the rest ran)."""
    failed = outcome.failed
    names = ", ".join(record["id"] or f"{what.rstrip('s')} {record['line']}" for record in failed[:5])
    more = f" and {len(failed) - 5} more" if len(failed) > 5 else ""
    where = f"their errors are in {outcome.manifest}; " if outcome.manifest else ""
    retry = "rerun the same command to retry them (finished jobs are skipped)" if outcome.manifest else \
        "their errors are above"
    return StablekitError(f"{len(failed)} of {len(outcome.records)} {what} failed: {names}{more}",
                          hint=where + retry)


def _folders(entries: list[Entry], manifest: Manifest, output_dir: Path) -> list[Path]:
    """Where this batch writes, and where earlier runs wrote: the folders to clear of stray temporary files."""
    folders = {output_dir}
    for entry in entries:
        prefix = (entry.job.output or "").split("{", 1)[0]
        folders.add((output_dir / prefix).parent if prefix else output_dir)
    for record in manifest.records:
        folders.update(Path(name).parent for name in record.get("outputs") or [])
    return sorted(folders)
