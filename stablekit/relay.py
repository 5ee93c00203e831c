"""The job side of `stablekit serve`: a job's client as the engines see it.

`Relay` is the Progress every served session reports to: it forwards stages, notes and step tasks to the
client of the job that is running (and stages and notes to the server's log), and it is where a cancelled
job is interrupted, at its next event. `guarded` sinks keep that interruption out of an output being written.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from .client import Channel
from .console import Progress, Steps


@dataclass
class Work:
    """One client's request in the queue: a job list or an unload."""

    number: int
    message: dict[str, Any]
    channel: Channel
    cancelled: threading.Event = field(default_factory=threading.Event)
    finished: threading.Event = field(default_factory=threading.Event)
    interrupted: bool = False  # the cancel was raised into the job once (an engine may carry on, like text)
    emitting: int = 0  # inside Sink.emit: an output and its sidecar land together, so no cancel there
    gone: bool = False  # the client closed its end
    answered: bool = False  # "done" or "error" is on its way: the client may hang up now
    send_lock: threading.Lock = field(default_factory=threading.Lock)

    def send(self, message: dict[str, Any]) -> None:
        if self.gone:
            return
        if message["type"] in ("done", "error", "unloaded", "refused"):
            self.answered = True
        try:
            with self.send_lock:
                self.channel.send(message)
        except OSError:
            self.gone = True
            self.cancelled.set()

    def check(self) -> None:
        """Raise KeyboardInterrupt into the job once it is cancelled (not while an output is being written)."""
        if self.cancelled.is_set() and not self.interrupted and not self.emitting:
            self.interrupted = True
            raise KeyboardInterrupt


class Relay(Progress):
    """The sessions' Progress: forwards stages, notes and step tasks to the client of the current job (and
    stages and notes to the log); where a cancelled job is interrupted, at its next event."""

    def __init__(self, log) -> None:
        self.log = log
        self.work: Work | None = None
        self._ids = 0

    def send(self, message: dict[str, Any]) -> None:
        """To the current job's client (nothing between jobs), then interrupt the job here if it was cancelled."""
        if self.work is not None:
            self.work.send(message)
            self.work.check()

    def stage(self, description: str) -> None:
        self.log(f"  {description}")
        self.send({"type": "stage", "text": description})

    def note(self, message: str) -> None:
        self.log(f"  {message}")
        self.send({"type": "note", "text": message})

    @contextmanager
    def task(self, description: str, total: int, then: str | None = None):
        self._ids += 1
        number = self._ids
        self.send({"type": "task", "id": number, "description": description, "total": total})

        def changed(steps: Steps) -> None:
            self.send({"type": "step", "id": number, "done": steps.done, "total": steps.total})

        try:
            yield Steps(total, changed, on_full=(lambda: self.stage(then)) if then else None)
        finally:
            if self.work is not None:
                self.work.send({"type": "end", "id": number})

    def text(self, piece: str) -> None:
        self.send({"type": "text", "piece": piece})


def guarded(base):
    """A sink class whose emit the cancel never interrupts (as finish_before_interrupt does for Ctrl-C)."""

    class Guarded(base):
        work: Work | None = None

        def emit(self, job, out):
            self.work.emitting += 1
            try:
                return super().emit(job, out)
            finally:
                self.work.emitting -= 1

    Guarded.__name__ = f"Served{base.__name__}"
    return Guarded
