"""The batch loop: one job at a time through one session pool, each ending in exactly one record.

A failing job is recorded and the loop goes on (or stops, with fail_fast); out of memory, every model is
released and the job runs once more with the next stronger plan; Ctrl-C and SIGTERM let the output being
written finish, record the job as interrupted and stop.
"""

from __future__ import annotations

import signal
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .batch_file import Entry
from .batch_progress import BatchProgress
from .errors import StablekitError
from .manifest import owner, record_key
from .plan_retry import OutOfMemory, is_out_of_memory, plan_summary, stronger_plan
from .planning import Plan
from .sink import Sink


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (exit 130) or SIGTERM (exit 143) stopped the batch; what finished is kept and recorded."""

    def __init__(self, signum: int = signal.SIGINT) -> None:
        super().__init__()
        self.signum = signum
        self.outcome: Outcome | None = None  # what was recorded before the stop

    @property
    def exit_code(self) -> int:
        return 128 + int(self.signum)


@dataclass
class Planned:
    """An entry with its plan, or the error that keeps it from running (recorded as its failure)."""

    entry: Entry
    plan: Plan | None = None
    error: StablekitError | None = None


@dataclass
class Outcome:
    """What a batch did: its records in the order they were made."""

    records: list[dict[str, Any]] = field(default_factory=list)
    manifest: Path | None = None

    def count(self, status: str) -> int:
        return sum(1 for record in self.records if record["status"] == status)

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [record for record in self.records if record["status"] == "failed"]


def record_of(entry: Entry, status: str, *, outputs: list[str], plan: dict | None = None, key: str | None = None,
              seconds: float = 0.0, loaded: list[str] | None = None, released: list[str] | None = None,
              error: dict | None = None, text: str | None = None) -> dict[str, Any]:
    """One manifest record (and --json line)."""
    job = entry.job
    record: dict[str, Any] = {"id": entry.id or None, "line": entry.line, "status": status, "command": job.command,
                              "model": job.spec.id, "outputs": outputs, "seconds": round(seconds, 3), "plan": plan,
                              "error": error, "digest": entry.digest, "output": key, "loaded": loaded or [],
                              "released": released or []}
    if text is not None:
        record["text"] = text
    return record


@dataclass
class _Attempt:
    """Where the sink and the pool stood when a job began: what its record counts from."""

    entry: Entry
    key: str | None
    results: int
    index: int
    loads: int
    held: list[str]
    clock: float = field(default_factory=time.monotonic)


class Driver:
    """Runs planned entries into `sink`, handing each job's record to `record` as it ends."""

    def __init__(self, sink: Sink, progress: BatchProgress, *, record: Callable[[dict], None],
                 fail_fast: bool = False, output_dir: Path | None = None,
                 previous: dict[str, dict] | None = None, pool=None, signals: bool = True) -> None:
        """`pool`: a SessionPool that outlives the batch (a server's warm models), else one of its own, closed
        at the end; `signals`: SIGTERM stops the batch like Ctrl-C (not in a server, whose signals are its own)."""
        from .sessions import SessionPool

        self.sink, self.progress, self.record, self.fail_fast = sink, progress, record, fail_fast
        self.output_dir, self.previous = output_dir, previous or {}
        self.own_pool, self.signals = pool is None, signals
        self.pool = pool if pool is not None else SessionPool(progress)
        self.stronger: set[tuple] = set()  # session keys whose plan ran out of memory: later jobs start stronger
        self.shown: set[tuple] = set()  # session keys whose plan was said

    def run(self, planned: list[Planned]) -> None:
        try:
            with _sigterm_as_interrupt(self.signals) as signals:
                try:
                    for item in planned:
                        if not self._one(item) and self.fail_fast:
                            break
                except KeyboardInterrupt:
                    raise Interrupted(signals.received or signal.SIGINT) from None
        finally:
            if self.own_pool:
                self.pool.close()

    def run_one(self, item: Planned) -> bool:
        """One job, its models kept loaded for the next call (a Ray worker's loop); False when it failed."""
        return self._one(item)

    def close(self) -> None:
        """Release every loaded model (after the last run_one)."""
        self.pool.close()

    def _one(self, item: Planned) -> bool:
        """Run one job and record it; False when it failed."""
        entry, sink = item.entry, self.sink
        self.progress.begin(entry.label)
        attempt = _Attempt(entry, record_key(entry.job, self.output_dir) if self.output_dir else None,
                           len(sink.results), sink.index, len(self.pool.loads), self.pool.held())
        if item.plan is None:
            self._failed(attempt, item.error, None)
            return False
        if hasattr(sink, "begin"):
            sink.begin(entry)
        plan = item.plan
        try:
            plan, retried = self._execute(plan, attempt)
        except KeyboardInterrupt:
            self._finish(attempt, "interrupted", plan_summary(plan))
            raise
        except Exception as err:  # noqa: BLE001 - every failure is recorded, and the batch goes on
            self._failed(attempt, err, plan)
            return False
        texts = [out["text"] for out in sink.results[attempt.results:] if out.get("kind") == "text" and "text" in out]
        outputs = self._finish(attempt, "done", plan_summary(plan, retried), text=texts[0] if texts else None)
        self._drop_stale(entry, outputs)
        return True

    def _execute(self, plan: Plan, attempt: _Attempt) -> tuple[Plan, str | None]:
        """Run the job; out of memory, release every model and run it once more with the next stronger plan
        (and start later jobs of the same model with that plan)."""
        from .runner import engine_for, execute, summary

        key = engine_for(plan.job.command).session_key(plan)
        retried = None
        if key in self.stronger and (found := stronger_plan(plan)):
            plan, change = found
            retried = f"{change}: an earlier job of {plan.spec.id} ran out of memory"
        if key not in self.shown:
            self.shown.add(key)
            for part in (*plan.stages, plan):
                self.progress.say(summary(part))
        try:
            execute(plan, self.sink, self.pool)
            return plan, retried
        except Exception as err:
            if not is_out_of_memory(err):
                raise
            self.pool.close()  # whatever the failed attempt held goes: the retry starts from free memory
            found = stronger_plan(plan)
            if found is None:
                raise OutOfMemory.after(plan, None) from err
        self._take_back(attempt)
        plan, change = found
        self.progress.say(f"{attempt.entry.label}: out of memory; retrying once with {change}")
        try:
            execute(plan, self.sink, self.pool)
        except Exception as err:
            if not is_out_of_memory(err):
                raise
            self.pool.close()
            raise OutOfMemory.after(plan, change) from err
        self.stronger.add(key)
        return plan, f"{change}, after running out of memory"

    def _take_back(self, attempt: _Attempt) -> None:
        """Remove what a job's first attempt wrote, so the retry writes under the same names."""
        for out in self.sink.results[attempt.results:]:
            for name in (out.get("path"), out.get("sidecar"), *out.get("files", [])):
                if name:
                    remove(Path(name))
        del self.sink.results[attempt.results:]
        self.sink.index = attempt.index
        if hasattr(self.sink, "begin"):
            self.sink.begin(attempt.entry)

    def _failed(self, attempt: _Attempt, err: BaseException, plan: Plan | None) -> None:
        label = attempt.entry.label
        if isinstance(err, StablekitError):
            error = {"type": type(err).__name__, "message": err.message, "hint": err.hint}
            self.progress.error(f"{label}: {err.message}", err.hint)
        else:  # not an error stablekit knows: its traceback says where it came from
            error = {"type": type(err).__name__, "message": str(err) or type(err).__name__, "hint": None}
            self.progress.error(f"{label}: {type(err).__name__}: {err}")
            self.progress.say("".join(traceback.format_exception(err)).rstrip())
        self._finish(attempt, "failed", plan_summary(plan), error=error)

    def _finish(self, attempt: _Attempt, status: str, plan: dict | None, *, error: dict | None = None,
                text: str | None = None) -> list[str]:
        """Record the job (its outputs, time, models loaded and released) and show it; returns its outputs."""
        results = self.sink.results[attempt.results:]
        outputs = list(dict.fromkeys(out["path"] for out in results if "path" in out))
        held = self.pool.held()
        released = [model for model in attempt.held if model not in held]
        if released:
            self.progress.say(f"released {', '.join(released)} to make room")
        record = record_of(attempt.entry, status, outputs=outputs, plan=plan, key=attempt.key,
                           seconds=time.monotonic() - attempt.clock, loaded=self.pool.loads[attempt.loads:],
                           released=released, error=error, text=text)
        self.record(record)
        self.progress.finished(record)
        return outputs

    def _drop_stale(self, entry: Entry, outputs: list[str]) -> None:
        """Outputs of the job's earlier run that this run did not write again (it makes fewer now) go."""
        previous = self.previous.get(entry.id)
        for name in (previous or {}).get("outputs") or []:
            path = Path(name)
            if name not in outputs and owner(path) == entry.id:
                remove(path)
                remove(path.with_name(path.name + ".json"))


def remove(path: Path) -> None:
    """Delete a file or a folder of frames; one that cannot be deleted stays."""
    import shutil

    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
        return
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass


@dataclass
class _Signals:
    received: int | None = None


@contextmanager
def _sigterm_as_interrupt(on: bool = True) -> Iterator[_Signals]:
    """SIGTERM becomes Ctrl-C for the batch (so the output being written finishes first), remembered so the exit
    code can say which it was."""
    state = _Signals()
    if not on or threading.current_thread() is not threading.main_thread():
        yield state
        return

    def on_term(signum, frame) -> None:
        state.received = signum
        if callable(previous):  # the CLI's own SIGTERM handler: it remembers the signal, for the exit code
            previous(signum, frame)
        signal.raise_signal(signal.SIGINT)

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        yield state
    finally:
        signal.signal(signal.SIGTERM, previous)
