"""The client side of `stablekit serve`: find a live server for this STABLEKIT_HOME and run jobs on it.

Commands call `run()` before they import any engine: it answers None when no server answers (the caller runs
the jobs itself), else sends the jobs, replays the server's progress into the caller's Progress, hands each
result record to `on_result` and returns them all, exactly as an in-process run would. Standard library only:
the point is to start in a blink, so no torch, no diffusers, no transformers here.

The wire is JSON lines over a Unix socket (see stablekit.server for the messages).
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from . import __version__
from .console import Progress
from .errors import StablekitError
from .wire import Channel, unix_address  # noqa: F401 - the server's and the commands' names for them

PROTOCOL = 1
CONNECT_TIMEOUT = 2.0  # a Unix socket connects at once or not at all
ANSWER_TIMEOUT = 10.0  # the server acknowledges a message from its connection thread, not after the queue
READ_TIMEOUT = 30.0  # the server sends "alive" every HEARTBEAT seconds while a job is queued or running
HEARTBEAT = 1.0
CANCEL_WAIT = 10.0  # after Ctrl-C: how long to wait for the server to finish the output it is writing


class ServerLost(StablekitError):
    """The server went away (or stopped answering) while it held one of our jobs."""


def server_dir() -> Path:
    from .paths import stablekit_home

    return stablekit_home() / "server"


def socket_path() -> Path:
    return server_dir() / "socket"


def pid_path() -> Path:
    return server_dir() / "pid"


def log_path() -> Path:
    return server_dir() / "log"


def lock_path() -> Path:
    return server_dir() / "lock"


def wanted(no_server: bool = False) -> bool:
    """Whether to look for a server at all: not with --no-server or STABLEKIT_SERVER=0, nor in a locked run (the
    server loads models as its own start decided, not as this run's lockfile says)."""
    from .lockfile import locked

    return (not no_server and os.environ.get("STABLEKIT_SERVER", "").strip() != "0" and hasattr(socket, "AF_UNIX")
            and not locked())


def connect(progress: Progress = Progress()) -> Channel | None:
    """A connection to the live server of this STABLEKIT_HOME, or None: no server, a stale socket (removed,
    with a note), someone else's socket, or no answer in time (a warning)."""
    path = socket_path()
    try:
        info = path.lstat()
    except OSError:
        return None
    if info.st_uid != os.getuid() or path.parent.stat().st_mode & 0o077:
        _warn(progress, f"ignoring the server socket {path}: not private to this user (running here)")
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(CONNECT_TIMEOUT)
    try:
        unix_address(path, sock.connect)
    except (ConnectionRefusedError, FileNotFoundError):
        sock.close()
        pid = remove_stale()
        if pid is False:
            _warn(progress, f"the server at {path} refused the connection (starting, or stopping); running here")
        else:
            progress.note(f"removed a stale server socket (server{f' pid {pid}' if pid else ''} is gone); running here")
        return None
    except OSError as err:
        sock.close()
        _warn(progress, f"the server at {path} did not answer ({err.strerror or 'timed out'}); running here")
        return None
    return Channel(sock)


def remove_stale() -> int | None | bool:
    """Remove the socket and pid file of a server that is gone (its lock is free); returns its pid (None when
    unknown), or False when a server still holds the lock (starting up, or busy)."""
    import fcntl

    try:
        lock = open(lock_path(), "a")  # noqa: SIM115 - held across the removal below
    except OSError:
        lock = None
    try:
        if lock is not None:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return False
        from .launch import socket_path as warm_client_socket

        pid = read_pid()
        for path in (socket_path(), pid_path(), warm_client_socket()):
            path.unlink(missing_ok=True)
        return pid
    finally:
        if lock is not None:
            lock.close()


def read_pid() -> int | None:
    try:
        return int(pid_path().read_text().strip())
    except (OSError, ValueError):
        return None


def request(message: dict[str, Any], progress: Progress = Progress(), timeout: float = ANSWER_TIMEOUT
            ) -> dict[str, Any] | None:
    """One control message (ps, unload, stop) and its answer; None when no server answers."""
    channel = connect(progress)
    if channel is None:
        return None
    try:
        channel.send({**message, "protocol": PROTOCOL, "version": __version__})
        while True:
            answer = channel.receive(timeout)
            if answer is None:
                raise ServerLost("the stablekit server closed the connection without answering")
            if answer.get("type") not in ("queued", "alive"):
                return answer
    except TimeoutError:
        raise ServerLost(f"the stablekit server did not answer in {timeout:.0f} s",
                         hint=f"see its log: {log_path()}") from None
    finally:
        channel.close()


def run(jobs: Iterable, progress: Progress, *, on_result: Callable[[dict], None], sink: str = "files",
        output_dir: str = ".", overwrite: bool = False, total: int = 1, on_text: Callable[[str], None] | None = None,
        text_json: bool = False, no_server: bool = False) -> list[dict] | None:
    """Run `jobs` on this STABLEKIT_HOME's server, as `runner.run` would here; None when no server took them.

    `sink` is "files" (outputs under `output_dir`, as stablekit.sink.Sink) or "text" (stablekit.sink.
    TextStreamSink: pieces to `on_text`, or one record per answer with `text_json`). Raises the job's own
    error (same message, hint and exit code), ServerLost when the server dies mid-job, KeyboardInterrupt
    after cancelling the job on Ctrl-C (outputs finished before it are kept and reported).
    """
    jobs = list(jobs)
    return _submit([wire_job(job) for job in jobs], progress, no_server=no_server, on_result=on_result,
                   on_text=on_text, output_dir=output_dir, folders=[_literal_dir(job.output) for job in jobs],
                   sink={"kind": sink, "output_dir": output_dir, "overwrite": overwrite, "total": total,
                         "as_json": text_json})


def run_batch(entries: Iterable, progress: Progress, *, on_result: Callable[[dict], None], output_dir: str,
              manifest: str, overwrite: bool = False, fail_fast: bool = False,
              no_server: bool = False) -> list[dict] | None:
    """Run a checked job file's entries (stablekit.batch_file.Entry) through the server's batch loop; None when
    no server took them. Each job's manifest record goes to `on_result`; the loop's progress (jobs begun and
    ended) is replayed into `progress` (a BatchProgress). Ctrl-C: KeyboardInterrupt after the server stopped."""
    entries = list(entries)
    wired = [{**wire_job(entry.job), "where": entry.where, "line": entry.line, "digest": entry.digest}
             for entry in entries]
    output_dir = str(Path(output_dir).resolve())
    return _submit(wired, progress, no_server=no_server, on_result=on_result, output_dir=output_dir,
                   folders=[_literal_dir(entry.job.output) for entry in entries],
                   sink={"kind": "batch", "output_dir": output_dir, "manifest": str(Path(manifest).resolve()),
                         "overwrite": overwrite, "fail_fast": fail_fast})


def _submit(wired: list[dict], progress: Progress, *, no_server: bool, on_result, on_text=None, output_dir: str,
            folders: list[str | None], sink: dict[str, Any]) -> list[dict] | None:
    if not wanted(no_server):
        return None
    channel = connect(progress)
    if channel is None:
        return None
    with contextlib.closing(channel):
        try:
            channel.send({"type": "job", "protocol": PROTOCOL, "version": __version__, "cwd": os.getcwd(),
                          "client_pid": os.getpid(), "jobs": wired, "sink": sink})
            answer = channel.receive(ANSWER_TIMEOUT)
        except (TimeoutError, OSError):
            _warn(progress, f"the stablekit server did not answer in {ANSWER_TIMEOUT:.0f} s; running here")
            return None
        if answer is None or answer.get("type") != "queued":
            why = (answer or {}).get("message", "it closed the connection")
            _warn(progress, f"the stablekit server did not take the job ({why}); running here")
            return None
        from .client_follow import Follow, Refused

        follow = Follow(channel, progress, on_result, on_text, answer.get("pid"))
        try:
            return follow.run()
        except Refused as refused:
            _warn(progress, f"the stablekit server did not take the job ({refused}); running here")
            return None
        except ServerLost:
            follow.clean_up([output_dir, *folders], output_dir)
            raise


def wire_job(job) -> dict[str, Any]:
    """The job object, with how its model was resolved when the object alone cannot say (a single-file
    checkpoint's --family and --config)."""
    entry: dict[str, Any] = {"job": job.to_dict()}
    if job.spec.checkpoint:
        entry.update(family=job.spec.family, config=job.spec.configs_from)
    return entry


def _literal_dir(output: str | None) -> str | None:
    """The folder an output template names literally (before any {field}), relative to --output-dir."""
    if not output:
        return None
    prefix = output.split("{", 1)[0]
    return prefix if prefix.endswith(("/", os.sep)) else str(Path(prefix).parent)


def _warn(progress: Progress, message: str) -> None:
    warn = getattr(progress, "warn", None)
    (warn or progress.note)(message)
