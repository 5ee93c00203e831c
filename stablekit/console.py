"""The one output object: results to stdout, progress and messages to stderr, plain when not a terminal."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from .errors import UsageError


def _progress_seconds() -> float:
    """How often piped output reports a long stage: $STABLEKIT_PROGRESS_SECONDS (a CI log may want 30), else 5."""
    value = os.environ.get("STABLEKIT_PROGRESS_SECONDS", "")
    try:
        return max(float(value), 0.0) if value else 5.0
    except ValueError:
        raise UsageError(f"STABLEKIT_PROGRESS_SECONDS={value!r}: not a number of seconds") from None


class Steps:
    """The handle a step task yields: call it once per step. It never counts past its total; a caller that
    learns the real total late (PNDM's warm-up step, img2img's strength) passes it: `advance(total=n)`."""

    def __init__(self, total: int, on_change: Callable[[Steps], None] = lambda steps: None,
                 on_full: Callable[[], None] | None = None) -> None:
        self.total = max(int(total), 0)
        self.done = 0
        self._on_change = on_change
        self._on_full = on_full  # called once, when the last step is counted

    def __call__(self, n: int = 1, *, total: int | None = None) -> None:
        if total is not None:
            self.total = max(int(total), self.done)
        self.done = min(self.done + n, self.total)
        self._on_change(self)
        if self._on_full is not None and self.done == self.total:
            on_full, self._on_full = self._on_full, None
            on_full()


class Progress:
    """Step reporting handed to engines; the base class reports nothing (library use, --quiet).

    An engine says what it is doing as stages and step tasks, in order: `stage("Loading …")`,
    `task("image 1/2", total=steps, then="Decoding")` (the task turns into the `then` stage when its last
    step is counted), or `stage("Decoding")` itself after the last step, even inside the task.
    """

    def stage(self, description: str) -> None:
        """A phase without steps (loading, decoding, surface extraction)."""

    def note(self, message: str) -> None:
        """Secondary information worth keeping (the seed that was drawn)."""

    @contextmanager
    def task(self, description: str, total: int, then: str | None = None) -> Iterator[Steps]:
        """A phase with `total` steps; yields a Steps handle that advances it by one per call."""
        yield Steps(total, on_full=(lambda: self.stage(then)) if then else None)


class Console(Progress):
    """Writes what a command produces; built once per invocation from the global flags.

    On a terminal, step tasks are bars and stages are spinner rows beneath them. Elsewhere (a pipe, a CI log)
    everything is plain lines, and a long stage or step task prints "label i/N (12 s)" at least every
    `heartbeat_s` seconds (default: $STABLEKIT_PROGRESS_SECONDS, else 5), so a log never looks hung.
    """

    def __init__(self, *, quiet: bool = False, stdout=None, stderr=None, heartbeat_s: float | None = None,
                 terminal: bool | None = None) -> None:
        self.quiet = quiet
        self._heartbeat_s = heartbeat_s
        self._out = stdout or sys.stdout
        self._err_file = stderr or sys.stderr
        self._terminal = terminal
        self._rich = None  # made on the first line to stderr: a quiet run that succeeds never imports rich
        self._lock = threading.RLock()
        self._last_line = time.monotonic()
        self._state: tuple[str, float, Steps | None] | None = None  # what a heartbeat line reports
        self._beat: threading.Thread | None = None
        self._bar = None  # the live rich progress display of the current task (terminal only)
        self._stage_row = None

    @property
    def heartbeat_s(self) -> float:
        if self._heartbeat_s is None:  # read when first needed: error output must work with a bad setting
            self._heartbeat_s = _progress_seconds()
        return self._heartbeat_s

    @property
    def _err(self):
        """The rich console that writes stderr."""
        if self._rich is None:
            from rich.console import Console as RichConsole

            self._rich = RichConsole(file=self._err_file, highlight=False, soft_wrap=True,
                                     force_terminal=self._terminal)
        return self._rich

    @property
    def animated(self) -> bool:
        return self._err.is_terminal and not self.quiet

    def result(self, value: str | dict[str, Any]) -> None:
        """One result line on stdout: a path, or a JSON object in --json mode."""
        line = json.dumps(value, sort_keys=True, default=str) if isinstance(value, dict) else str(value)
        with self._lock:
            self._state = None  # the work behind the last stage is done
        print(line, file=self._out, flush=True)

    def close(self) -> None:
        """The run is over, failed or not: no more heartbeat lines (the thread ends within a second)."""
        with self._lock:
            self._state = None

    def table(self, table) -> None:
        """A rich table on stdout (human listings; scripts use --json)."""
        from rich.console import Console as RichConsole

        piped = not self._out.isatty()  # a pipe or file gets full rows, not an 80-column wrap
        RichConsole(file=self._out, highlight=False, width=200 if piped else None).print(table)

    def _say(self, message: str, style: str | None = None) -> None:
        with self._lock:
            self._err.print(message, style=style, markup=False)
            self._last_line = time.monotonic()

    def info(self, message: str) -> None:
        if not self.quiet:
            self._say(message)

    def note(self, message: str) -> None:
        if not self.quiet:
            self._say(message, style="dim")

    def warn(self, message: str) -> None:
        self._say(f"Warning: {message}", style="yellow")

    def error(self, message: str, hint: str | None = None) -> None:
        self._say(f"Error: {message}", style="bold red")
        if hint:
            self._say(f"Hint: {hint}")

    def stage(self, description: str) -> None:
        if self.quiet:
            return
        with self._lock:
            if self._bar is not None:  # inside a task on a terminal: a row of its own under the bar
                if self._stage_row is not None:
                    self._bar.remove_task(self._stage_row)
                self._stage_row = self._bar.add_task(description, total=None, count="")
                return
            self._say(description)
            if not self.animated:
                self._follow(description, None)

    @contextmanager
    def task(self, description: str, total: int, then: str | None = None) -> Iterator[Steps]:
        if self.quiet:
            with super().task(description, total, then) as steps:
                yield steps
            return
        if not self.animated:
            yield from self._plain_task(description, total, then)
            return
        from rich.progress import BarColumn, TextColumn, TimeElapsedColumn
        from rich.progress import Progress as Bar

        bar = Bar(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[count]}"),
                  TimeElapsedColumn(), console=self._err, transient=True)

        def changed(steps: Steps) -> None:
            bar.update(handle, completed=steps.done, total=steps.total, count=f"{steps.done}/{steps.total}")

        with bar:
            steps = Steps(total, changed, on_full=(lambda: self.stage(then)) if then else None)
            handle = bar.add_task(description, total=steps.total, count=f"0/{steps.total}")
            with self._lock:
                self._bar, self._stage_row = bar, None
            try:
                yield steps
            finally:
                with self._lock:
                    self._bar = self._stage_row = None

    def _plain_task(self, description: str, total: int, then: str | None) -> Iterator[Steps]:
        started = time.monotonic()

        def changed(steps: Steps) -> None:
            with self._lock:
                if time.monotonic() - self._last_line >= self.heartbeat_s:
                    self._say(self._line(description, started, steps))

        steps = Steps(total, changed, on_full=(lambda: self.stage(then)) if then else None)
        self._say(f"{description} ({steps.total} step{'s' if steps.total != 1 else ''})")
        self._follow(description, steps)
        try:
            yield steps
        finally:
            with self._lock:
                self._state = None

    @staticmethod
    def _line(label: str, since: float, steps: Steps | None) -> str:
        elapsed = f"{time.monotonic() - since:.0f} s"
        return f"{label}: {steps.done}/{steps.total} ({elapsed})" if steps is not None else f"{label} ... {elapsed}"

    def _follow(self, label: str, steps: Steps | None) -> None:
        """Plain output: make `label` what the heartbeat reports until the next stage, task or result."""
        interval = self.heartbeat_s  # read here, where a bad setting raises in the caller's thread
        if interval <= 0:
            return
        with self._lock:
            self._state = (label, time.monotonic(), steps)
            if self._beat is None or not self._beat.is_alive():
                self._beat = threading.Thread(target=self._heartbeat, name="stablekit-heartbeat", daemon=True)
                self._beat.start()

    def _heartbeat(self) -> None:
        while True:
            time.sleep(min(1.0, self.heartbeat_s / 4))
            with self._lock:
                if self._state is None:
                    self._beat = None
                    return
                if time.monotonic() - self._last_line >= self.heartbeat_s:
                    self._say(self._line(*self._state))

    def show_plan(self, data: dict[str, Any], as_json: bool) -> None:
        """--dry-run: the plan is the result, so it goes to stdout."""
        if as_json:
            self.result(data)
            return
        plan, hw, files = data["plan"], data["hardware"], data["files"]
        switches = [name for name, key in (("VAE tiling", "vae_tiling"), ("VAE slicing", "vae_slicing"),
                                           ("attention slicing", "attention_slicing")) if plan[key]]
        if plan.get("decode_chunk_size"):
            switches.append(f"decode chunk {plan['decode_chunk_size']}")
        lines = [
            f"model     {data['model']}  ({data['source']}; files: {files['status']})",
            f"hardware  {hw['accelerator']}: {hw['name']}, {hw['memory_total_gib']:.1f} GiB "
            f"({hw['memory_free_gib']:.1f} free), RAM {hw['ram_total_gib']:.1f} GiB",
            f"workload  {data['workload']}",
            f"plan      {plan['device']} · {plan['dtype']} · offload {plan['offload']}"
            + (" · " + " · ".join(switches) if switches else ""),
            f"memory    ~{plan['peak_gib']:.1f} GiB peak of {plan['budget_gib']:.1f} GiB {plan['memory_kind']} budget"
            f" (weights {plan['weights_gib']:.1f} GiB)",
            "why",
            *(f"  - {reason}" for reason in plan["reasons"]),
        ]
        for line in lines:
            self.result(line)

    def show_plan_summary(self, plan) -> None:
        self.note(f"plan: {plan.device}, {plan.dtype}, offload {plan.offload}, "
                  f"~{plan.peak_gib:.1f} GiB of {plan.memory_kind} (budget {plan.budget_gib:.1f})")
