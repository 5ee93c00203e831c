"""The one output object: results to stdout, progress and messages to stderr, plain when not a terminal."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class Progress:
    """Step reporting handed to engines; the base class reports nothing (library use, --quiet)."""

    def stage(self, description: str) -> None:
        """A phase without steps (loading, decoding)."""

    def note(self, message: str) -> None:
        """Secondary information worth keeping (the seed that was drawn)."""

    @contextmanager
    def task(self, description: str, total: int) -> Iterator[Any]:
        """A phase with `total` steps; yields a callable that advances it by one."""
        yield lambda: None


class Console(Progress):
    """Writes what a command produces; built once per invocation from the global flags."""

    def __init__(self, *, quiet: bool = False, stdout=None, stderr=None) -> None:
        from rich.console import Console as RichConsole

        self.quiet = quiet
        self._out = stdout or sys.stdout
        self._err = RichConsole(file=stderr or sys.stderr, highlight=False, soft_wrap=True)

    @property
    def animated(self) -> bool:
        return self._err.is_terminal and not self.quiet

    def result(self, value: str | dict[str, Any]) -> None:
        """One result line on stdout: a path, or a JSON object in --json mode."""
        line = json.dumps(value, sort_keys=True, default=str) if isinstance(value, dict) else str(value)
        print(line, file=self._out, flush=True)

    def table(self, table) -> None:
        """A rich table on stdout (human listings; scripts use --json)."""
        from rich.console import Console as RichConsole

        piped = not self._out.isatty()  # a pipe or file gets full rows, not an 80-column wrap
        RichConsole(file=self._out, highlight=False, width=200 if piped else None).print(table)

    def info(self, message: str) -> None:
        if not self.quiet:
            self._err.print(message, markup=False)

    def note(self, message: str) -> None:
        if not self.quiet:
            self._err.print(message, style="dim", markup=False)

    def warn(self, message: str) -> None:
        self._err.print(f"Warning: {message}", style="yellow", markup=False)

    def error(self, message: str, hint: str | None = None) -> None:
        self._err.print(f"Error: {message}", style="bold red", markup=False)
        if hint:
            self._err.print(f"Hint: {hint}", markup=False)

    def stage(self, description: str) -> None:
        self.info(description)

    @contextmanager
    def task(self, description: str, total: int) -> Iterator[Any]:
        if not self.animated:
            self.info(f"{description} ({total} step{'s' if total != 1 else ''})")
            yield lambda: None
            return
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
        from rich.progress import Progress as Bar

        with Bar(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                 console=self._err, transient=True) as bar:
            handle = bar.add_task(description, total=total)
            yield lambda: bar.advance(handle)

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
