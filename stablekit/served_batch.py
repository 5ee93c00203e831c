"""`stablekit batch` on a running `stablekit serve`: the batch loop runs in the server, with its warm models.

The client has parsed and checked the job file; the server skips what is done, plans, runs and records (the
manifest and the outputs are written by the server, in the client's folders, as the client would). What the
loop tells its BatchProgress (a job began, ended, a line to say) is sent to the client as "batch" messages and
replayed there into the client's own BatchProgress, so the terminal shows what a local batch shows.
"""

from __future__ import annotations

from contextlib import contextmanager
from functools import partial
from typing import Any

from .batch_file import Entry
from .console import Progress

# The BatchProgress calls the client replays, with the arguments they carry; "open"/"close" bracket running().
CALLS = ("open", "close", "begin", "finished", "say", "error")


class ServedBatchProgress(Progress):
    """The batch loop's progress in the server: engine events through the relay (which forwards them and is
    where a cancel interrupts the job), the loop's own calls as "batch" messages to the client."""

    def __init__(self, relay) -> None:
        self.relay = relay

    def _call(self, name: str, *args: Any) -> None:
        self.relay.send({"type": "batch", "call": name, "args": list(args)})

    @contextmanager
    def running(self, total: int, skipped: int = 0):
        self._call("open", total, skipped)
        try:
            yield self
        finally:
            if self.relay.work is not None:
                self.relay.work.send({"type": "batch", "call": "close", "args": []})

    def begin(self, label: str) -> None:
        self._call("begin", label)

    def finished(self, record: dict[str, Any]) -> None:
        self._call("finished", record)

    def say(self, message: str) -> None:
        self._call("say", message)

    def error(self, message: str, hint: str | None = None) -> None:
        self._call("error", message, hint)

    def stage(self, description: str) -> None:
        self.relay.stage(description)

    def note(self, message: str) -> None:
        self.relay.note(message)

    def task(self, description: str, total: int, then: str | None = None):
        return self.relay.task(description, total, then)


def entries_of(wired: list[dict[str, Any]], job_of) -> list[Entry]:
    """The client's entries made Entries again: each job resolved here (`job_of`), where and digest as sent."""
    return [Entry(job_of(item), item.get("where", ""), int(item.get("line", 0)), item["digest"]) for item in wired]


def run(work, relay, pool, job_of, recorded: dict[str, Any]) -> int:
    """Run the batch a client sent; its records go back as results. 0 when it ran to the end (failed jobs are
    in the records: the client decides its exit code as a local batch does), 130 when cancelled. `recorded`:
    the sidecar keys that say which server ran the jobs."""
    from .batch import BatchSink, Interrupted, run_batch
    from .batch_run import Driver
    from .manifest import Manifest
    from .relay import guarded

    message, options = work.message, work.message["sink"]
    entries = entries_of(message["jobs"], job_of)
    work.send({"type": "started"})
    sink = guarded(BatchSink)(options["output_dir"], overwrite=options["overwrite"], recorded=recorded)
    sink.work = work
    try:
        run_batch(entries, output_dir=options["output_dir"], manifest=Manifest(options["manifest"]),
                  progress=ServedBatchProgress(relay), overwrite=options["overwrite"],
                  fail_fast=options["fail_fast"], on_record=lambda record: work.send({"type": "result",
                                                                                      "record": record}),
                  driver=partial(Driver, pool=pool, signals=False), sink=sink)
    except Interrupted:
        return 130
    return 0
