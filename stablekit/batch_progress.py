"""Progress of a batch: in a terminal one overall bar with the current job's steps under it; elsewhere one plain
line per finished job on stderr (and a heartbeat line when a job runs long without one)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from .console import Console, Progress, Steps

_KEPT_STAGES = ("Loading", "Downloading")  # slow, rare events worth a line in a log; other stages are steps


class BatchProgress(Progress):
    """What engines report during a batch, and what the batch driver reports about its jobs.

    Engines' step tasks and stages become the job rows under the overall bar (terminal) or are left out of a
    log except for model loads; their notes are kept when they are warnings.
    """

    def __init__(self, console: Console, *, stream=None, terminal: bool | None = None) -> None:
        self.console = console
        self.terminal = console.animated if terminal is None else terminal and not console.quiet
        self._stream = stream
        self.total = 0
        self.counts = {"done": 0, "skipped": 0, "failed": 0}
        self._label = ""
        self._started: float | None = None  # when the first job began running (the rate leaves skips out)
        self._last_line = time.monotonic()
        self._bar = None
        self._overall = self._job_row = self._stage_row = None

    # --- the driver's side ---------------------------------------------------------------------------

    @contextmanager
    def running(self, total: int, skipped: int = 0) -> Iterator[BatchProgress]:
        """The batch's display, open while its jobs run."""
        self.total, self.counts["skipped"] = total, skipped
        if skipped and not self.terminal:
            self.say(f"skipping {skipped} job{'s' if skipped != 1 else ''} already done")
        if not self.terminal:
            yield self
            return
        from rich.console import Console as RichConsole
        from rich.progress import BarColumn, TextColumn
        from rich.progress import Progress as Bar

        out = RichConsole(file=self._stream or sys.stderr, highlight=False, soft_wrap=True, force_terminal=True)
        from rich.table import Column

        # The counts keep their width; a long job label gives way first in a narrow terminal.
        label = Column(ratio=1, no_wrap=True, overflow="ellipsis")
        self._bar = Bar(TextColumn("{task.description}", table_column=label), BarColumn(bar_width=20),
                        TextColumn("{task.fields[info]}", table_column=Column(no_wrap=True)), console=out,
                        transient=True, expand=True)
        with self._bar:
            self._overall = self._bar.add_task("batch", total=max(total, 1), completed=skipped, info="")
            self._refresh()
            try:
                yield self
            finally:
                self._bar = self._overall = self._job_row = self._stage_row = None

    def begin(self, label: str) -> None:
        """A job starts: `label` (its id) heads its step rows."""
        if self._started is None:
            self._started = time.monotonic()
        self._label = label
        self._clear_rows()

    def finished(self, record: dict[str, Any]) -> None:
        """A job ended (done or failed): count it, and in a log, say it in one line."""
        status = record["status"]
        if status in self.counts:
            self.counts[status] += 1
        self._clear_rows()
        if self._bar is not None:
            self._refresh()
            return
        if self.console.quiet:
            return
        position = self.counts["done"] + self.counts["failed"] + self.counts["skipped"]
        what = f"({record.get('command')} {record.get('model')}, {record.get('seconds', 0):.1f} s)"
        if status == "failed":
            detail = (record.get("error") or {}).get("message", "")
        else:
            detail = ", ".join(record.get("outputs") or [])
        name = record["id"] or self._label
        self._line(f"[{position}/{self.total}] {status} {name} {what}" + (f": {detail}" if detail else ""))

    def say(self, message: str) -> None:
        """A message of the driver's own (a model released, a retry, strays removed)."""
        if self.console.quiet:
            return
        if self._bar is not None:
            self._bar.console.print(message, markup=False, style="dim")
        else:
            self._line(message, style="dim")

    def above(self, show: Callable[[], None]) -> None:
        """Run `show` (a result printed to stdout) with the bar out of the way when it is on the terminal."""
        if self._bar is None or not _is_terminal(sys.stdout):
            show()
            return
        self._bar.stop()  # transient: the bar is cleared, the line printed, the bar drawn again below it
        try:
            show()
        finally:
            self._bar.start()

    def result(self, value: str | dict[str, Any]) -> None:
        """A result line on stdout."""
        self.above(lambda: self.console.result(value))

    def error(self, message: str, hint: str | None = None) -> None:
        if self._bar is not None:
            self._bar.console.print(f"Error: {message}", markup=False, style="bold red")
            if hint:
                self._bar.console.print(f"Hint: {hint}", markup=False)
        else:
            self.console.error(message, hint)

    def rate(self) -> tuple[float, float | None]:
        """(jobs per minute since the first one began, seconds left at that rate or None)."""
        ran = self.counts["done"] + self.counts["failed"]
        if self._started is None or not ran:
            return 0.0, None
        per_minute = ran / max(time.monotonic() - self._started, 1e-6) * 60
        left = self.total - ran - self.counts["skipped"]
        return per_minute, left / per_minute * 60

    # --- the engines' side ---------------------------------------------------------------------------

    def stage(self, description: str) -> None:
        if self.console.quiet:
            return
        if self._bar is not None:
            if self._stage_row is not None:
                self._bar.remove_task(self._stage_row)
            self._stage_row = self._bar.add_task(f"  {description}", total=None, info="")
        elif description.startswith(_KEPT_STAGES):
            self._line(f"{self._label}: {description}" if self._label else description)

    def note(self, message: str) -> None:
        if message.startswith("Warning"):
            self.say(f"{self._label}: {message}" if self._label else message)

    @contextmanager
    def task(self, description: str, total: int, then: str | None = None) -> Iterator[Steps]:
        if self.console.quiet:
            with super().task(description, total, then) as steps:
                yield steps
            return
        started = time.monotonic()
        label = f"{self._label}: {description}" if self._label else description

        def changed(steps: Steps) -> None:
            if self._bar is not None and self._job_row is not None:
                self._bar.update(self._job_row, completed=steps.done, total=steps.total,
                                 info=f"{steps.done}/{steps.total}")
            elif self._bar is None and time.monotonic() - self._last_line >= self.console.heartbeat_s:
                self._line(f"{label}: {steps.done}/{steps.total} ({time.monotonic() - started:.0f} s)")

        steps = Steps(total, changed, on_full=(lambda: self.stage(then)) if then else None)
        if self._bar is not None:
            self._clear_rows()
            self._job_row = self._bar.add_task(f"  {label}", total=max(steps.total, 1), info=f"0/{steps.total}")
        yield steps

    # --- inside ------------------------------------------------------------------------------------------

    def _line(self, message: str, style: str | None = None) -> None:
        if style:
            self.console.note(message)
        else:
            self.console.info(message)
        self._last_line = time.monotonic()

    def _clear_rows(self) -> None:
        if self._bar is None:
            return
        for row in (self._job_row, self._stage_row):
            if row is not None:
                self._bar.remove_task(row)
        self._job_row = self._stage_row = None

    def _refresh(self) -> None:
        done, skipped, failed = self.counts["done"], self.counts["skipped"], self.counts["failed"]
        per_minute, left = self.rate()
        parts = [f"{done} done"] + [f"{n} {what}" for n, what in ((skipped, "skipped"), (failed, "failed")) if n]
        if per_minute:
            parts.append(f"{per_minute:.1f}/min")
        if left is not None:
            parts.append(f"ETA {_clock(left)}")
        info = " · ".join(parts)
        self._bar.update(self._overall, completed=done + skipped + failed, info=info,
                         description=f"batch {done + skipped + failed}/{self.total}")


def _is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"
