"""The client's side of a running job: the server's messages replayed into the caller's Progress, results to
the caller, until the job is done; Ctrl-C sends the cancel and waits for the output being written."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Any

from .client import CANCEL_WAIT, READ_TIMEOUT, Channel, ServerLost, log_path
from .console import Progress
from .errors import StablekitError


class Refused(Exception):
    """The server gave a queued job back before starting it (it is stopping): the client runs it itself."""


class Follow:
    """Replays one job's messages: progress into the caller's Progress, results to on_result, until done."""

    def __init__(self, channel: Channel, progress: Progress, on_result, on_text, pid: int | None) -> None:
        self.channel, self.progress, self.on_result, self.on_text, self.pid = channel, progress, on_result, on_text, pid
        self.results: list[dict] = []
        self.started = False
        self.tasks: dict[int, tuple[Any, Any]] = {}  # task id -> (context manager, Steps)
        self.display = contextlib.ExitStack()  # a served batch's progress display, open while it runs

    def run(self) -> list[dict]:
        try:
            try:
                code = self._until_done(READ_TIMEOUT)
            except KeyboardInterrupt:
                with contextlib.suppress(OSError):
                    self.channel.send({"type": "cancel"})
                with contextlib.suppress(StablekitError, KeyboardInterrupt, Refused):
                    self._until_done(CANCEL_WAIT)
                raise KeyboardInterrupt from None
        finally:
            self._end_tasks()
        if code == 130:
            raise KeyboardInterrupt
        return self.results

    def _until_done(self, timeout: float) -> int:
        who = f"the stablekit server{f' (pid {self.pid})' if self.pid else ''}"
        while True:
            try:
                message = self.channel.receive(timeout)
            except TimeoutError:
                if not self.started:  # closing the connection takes the job back: run it here
                    raise Refused(f"it did not answer for {timeout:.0f} s") from None
                raise ServerLost(f"{who} stopped answering (nothing for {timeout:.0f} s) during the job",
                                 hint=f"see its log: {log_path()}; `stablekit stop`, or kill it") from None
            if message is None and not self.started:  # it wrote nothing for us: run the job here
                raise Refused("it closed the connection before starting the job")
            if message is None:
                raise ServerLost(f"{who} stopped in the middle of the job; nothing half-written was kept",
                                 hint="outputs finished before it stopped are listed above; run the command "
                                      "again (with no server answering, it runs here)")
            kind = message.get("type")
            if kind == "refused" and not self.started:
                raise Refused(message.get("message", "it is stopping"))
            self.started = self.started or kind == "started"
            if kind == "done":
                return int(message.get("exit_code", 0))
            if kind == "error":
                self._end_tasks()
                if message.get("traceback"):
                    sys.stderr.write(message["traceback"])
                error = StablekitError(message["message"], message.get("hint"))
                error.exit_code = int(message.get("exit_code", 1))
                raise error
            self._replay(kind, message)

    def _replay(self, kind: str | None, message: dict[str, Any]) -> None:
        if kind == "result":
            self.results.append(message["record"])
            self.on_result(message["record"])
        elif kind == "text" and self.on_text is not None:
            self.on_text(message["piece"])
        elif kind == "stage":
            self.progress.stage(message["text"])
        elif kind == "note":
            self.progress.note(message["text"])
        elif kind == "task":
            manager = self.progress.task(message["description"], message["total"])
            self.tasks[message["id"]] = (manager, manager.__enter__())
        elif kind == "step" and message["id"] in self.tasks:
            steps = self.tasks[message["id"]][1]
            steps(message["done"] - steps.done, total=message["total"])
        elif kind == "end" and message["id"] in self.tasks:
            self.tasks.pop(message["id"])[0].__exit__(None, None, None)
        elif kind == "batch":
            self._batch(message.get("call"), message.get("args") or [])
        # "started", "alive" and anything newer servers send: nothing to show

    def _batch(self, call: str | None, args: list) -> None:
        """A served batch loop's call on its progress (stablekit.served_batch), made on the caller's."""
        if call == "open" and hasattr(self.progress, "running"):
            self.display.enter_context(self.progress.running(*args))
        elif call == "close":
            self.display.close()
        elif call in ("begin", "finished", "say", "error") and hasattr(self.progress, call):
            getattr(self.progress, call)(*args)

    def _end_tasks(self) -> None:
        while self.tasks:
            _, (manager, _) = self.tasks.popitem()
            with contextlib.suppress(Exception):
                manager.__exit__(None, None, None)
        with contextlib.suppress(Exception):
            self.display.close()

    def clean_up(self, folders: list[str | None], output_dir: str) -> None:
        """The dead server's temporary files in the job's output folders: nothing half-written stays."""
        from .outputs import pid_alive, remove_strays

        if not self.pid:
            return
        for folder in {str(Path(output_dir, f).resolve()) for f in folders if f is not None}:
            remove_strays(Path(folder), alive=lambda pid: pid != self.pid and pid_alive(pid))

