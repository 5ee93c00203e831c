"""The CLI process's edges: SIGTERM handled like Ctrl-C, and a stdout that cannot be written (a full disk, an
I/O error, a reader that went away) said once instead of a traceback."""

from __future__ import annotations

import errno
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

SIGPIPE_EXIT = 128 + 13  # what a shell shows for a writer killed by SIGPIPE (`yes | head -1`)
SIGTERM_EXIT = 128 + signal.SIGTERM


class StdoutLost(BaseException):
    """stdout refused a write. A BaseException, like KeyboardInterrupt, so that no `except Exception` (a batch
    recording a failed job and going on) carries on writing results nobody can read."""

    def __init__(self, error: OSError) -> None:
        super().__init__(error)
        self.error = error

    @property
    def broken_pipe(self) -> bool:
        return self.error.errno == errno.EPIPE


class _GuardedStdout:
    """sys.stdout as it was, except that an OSError from write or flush becomes StdoutLost."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except OSError as err:
            raise StdoutLost(err) from None

    def flush(self) -> None:
        try:
            self._stream.flush()
        except OSError as err:
            raise StdoutLost(err) from None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


@contextmanager
def guarded_stdout() -> Iterator[None]:
    """sys.stdout guarded for the run; flushed at the end, so a failure is met here and not at exit."""
    original = sys.stdout
    sys.stdout = _GuardedStdout(original)
    try:
        yield
        sys.stdout.flush()
    finally:
        sys.stdout = original


def drop_stdout(error: StdoutLost) -> None:
    """After stdout failed: what is still buffered for it goes nowhere, so the interpreter's last flush at exit
    cannot fail again (and print "Exception ignored ...")."""
    stream = sys.__stdout__
    if stream is None or sys.stdout is not stream:
        return
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


def stdout_message(error: StdoutLost) -> str:
    reason = {errno.ENOSPC: "the disk is full", errno.EIO: "input/output error",
              errno.EBADF: "it is closed"}.get(error.error.errno or 0, error.error.strerror or str(error.error))
    return f"cannot write the results to stdout: {reason}"


def stdout_hint(error: StdoutLost) -> str:
    free = "free some space, or " if error.error.errno == errno.ENOSPC else ""
    return f"{free}send the results to another file or a pipe (what was written is in place, with its sidecar)"


@dataclass
class Terminated:
    received: bool = False


@contextmanager
def sigterm_as_interrupt() -> Iterator[Terminated]:
    """SIGTERM raises KeyboardInterrupt as Ctrl-C does (an output being written finishes first, see
    outputs.finish_before_interrupt; temporary files are removed); `received` tells the exit code apart."""
    state = Terminated()
    if threading.current_thread() is not threading.main_thread():
        yield state
        return

    def on_term(signum, frame) -> None:
        state.received = True
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        yield state
    finally:
        signal.signal(signal.SIGTERM, previous)
