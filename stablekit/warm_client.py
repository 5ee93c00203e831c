"""The server's warm client: a process that has imported and built what a served call needs, and forks a copy of
itself for each call that stablekit.launch hands it, so that the call skips its imports.

`stablekit serve` starts it (`python -m stablekit.warm_client SERVER_PID`) in its own session, with no terminal of
its own. It never imports torch, diffusers or transformers: each copy is a client like any other, and a job goes
to the server (or runs in the copy, where the client would run it itself). It listens on STABLEKIT_HOME/server/
launch (owner-only, like the server's socket), checks that the caller runs this same stablekit with this same
interpreter, then answers {"ready": true}, receives the caller's three standard streams, and answers
{"pid": N} once the copy runs, then {"exit": CODE} or {"signal": N}.
A caller that goes away takes its copy with it (SIGTERM). It stops with the server: when told to (SIGTERM), or
when it finds the server gone; either way it takes no new calls and ends once its copies have.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import select
import signal
import socket
import sys
import time

from .launch import WARM_COMMANDS, command_word, identity, socket_path
from .wire import Channel, unix_address

READ_TIMEOUT = 2.0  # a caller sends its whole call at once
COPY_SIGNALS = {signal.SIGTERM, signal.SIGINT}


class WarmClient:
    """The listening loop: accept calls, fork their copies, report how each ended; stop with the server."""

    def __init__(self, server_pid: int) -> None:
        self.server_pid = server_pid
        self.identity = identity()
        self.path = socket_path()
        self.listener: socket.socket | None = None
        self.inode: int | None = None
        self.calls: dict[int, Call] = {}
        self.stopping: str | None = None

    def serve(self) -> None:
        wake_read, wake_write = os.pipe()
        for fd in (wake_read, wake_write):
            os.set_blocking(fd, False)
        signal.set_wakeup_fd(wake_write)
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)  # wakes select() through the wakeup pipe
        told: list[str] = []  # a signal handler only notes it: the loop closes the socket between its select()s
        signal.signal(signal.SIGTERM, lambda signum, frame: told.append("told to stop"))
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the server's terminal is not ours
        self.own = [wake_read, wake_write]
        warm_up()
        try:
            self.listen()
        except OSError as err:  # the server runs on; its clients start the usual way
            log(f"warm client: cannot listen on {self.path} ({err.strerror or err}); clients start the usual way")
            return
        log(f"warm client ready (pid {os.getpid()})")
        while self.listener is not None or self.calls:
            if told or os.getppid() != self.server_pid:
                self.stop(told[0] if told else "the server is gone")
            waiting = [wake_read, *(call.caller for call in self.calls.values() if call.caller is not None)]
            if self.listener is not None:
                waiting.append(self.listener)
            readable, _, _ = select.select(waiting, [], [], 0.5)
            for ready in readable:
                if ready is wake_read:
                    with contextlib.suppress(OSError):
                        os.read(wake_read, 4096)
                elif ready is self.listener:
                    self.accept()
                else:
                    self.caller_gone(ready)
            self.reap()
        log(f"warm client stopped ({self.stopping})")

    def listen(self) -> None:
        """An owner-only socket beside the server's (the folder is already private)."""
        self.path.unlink(missing_ok=True)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            unix_address(self.path, sock.bind)
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)
        self.inode = self.path.stat().st_ino
        sock.listen(64)
        self.listener = sock

    def stop(self, why: str) -> None:
        """No new calls (the socket goes, unless a newer warm client has replaced it); running copies finish."""
        self.stopping = self.stopping or why
        if self.listener is None:
            return
        with contextlib.suppress(OSError):
            self.listener.close()
        self.listener = None
        with contextlib.suppress(OSError):
            if self.path.stat().st_ino == self.inode:
                self.path.unlink()

    def accept(self) -> None:
        try:
            caller, _ = self.listener.accept()
        except OSError:
            return
        fds: list[int] = []
        channel = Channel(caller)
        try:
            request = channel.receive(READ_TIMEOUT)
            command = command_word(request["argv"]) or "?"
            refusal = self.refusal(request)
            if refusal:
                channel.send({"refused": refusal})
                caller.close()
                return
            # Only now the streams: a caller that gave up on a stuck warm client must not leave them in flight
            # (a pipe held open that way never ends for its reader).
            channel.send({"ready": True})
            caller.settimeout(READ_TIMEOUT)
            _, fds, _, _ = socket.recv_fds(caller, 1, 3)
            if len(fds) != 3 or hung_up(caller):  # it gave up waiting (this process was stopped): it runs it itself
                caller.close()
                return
            # Until the copy has its own handlers, SIGTERM and SIGINT wait: this process's would run in the copy.
            signal.pthread_sigmask(signal.SIG_BLOCK, COPY_SIGNALS)
            try:
                pid = os.fork()
                if pid == 0:
                    others = [call.caller for call in self.calls.values() if call.caller is not None]
                    run_copy(request, fds, [caller, self.listener, *others], self.own)
            finally:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, COPY_SIGNALS)
            self.calls[pid] = Call(caller, command, time.monotonic())
            try:
                channel.send({"pid": pid})
            except OSError:
                self.caller_gone(caller)
                return
            caller.setblocking(True)
        except (OSError, ValueError, KeyError, TypeError):
            with contextlib.suppress(OSError):
                caller.close()
        finally:
            for fd in fds:
                with contextlib.suppress(OSError):
                    os.close(fd)

    def refusal(self, request: dict) -> str | None:
        """Why this process cannot run the call as the caller would (None: it can)."""
        if os.getppid() != self.server_pid or self.stopping:
            return "the server is stopping"
        different = [key for key, value in self.identity.items() if request.get(key) != value]
        return f"the caller differs ({', '.join(different)})" if different else None

    def caller_gone(self, ready: socket.socket) -> None:
        """A caller's socket turns readable only when the caller went away: its copy goes too."""
        for pid, call in self.calls.items():
            if call.caller is ready:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGTERM)
                ready.close()
                call.caller = None

    def reap(self) -> None:
        """Tell each caller whose copy ended how it ended."""
        while self.calls:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self.calls.clear()
                return
            if pid == 0:
                return
            call = self.calls.pop(pid, None)
            if call is None:
                continue
            if os.WIFSIGNALED(status):
                answer, how = {"signal": os.WTERMSIG(status)}, f"signal {os.WTERMSIG(status)}"
            else:
                answer = {"exit": os.waitstatus_to_exitcode(status)}
                how = f"exit {answer['exit']}"
            log(f"client {pid} ({call.command}): {how} after {time.monotonic() - call.started:.2f} s")
            if call.caller is not None:
                with contextlib.suppress(OSError):
                    Channel(call.caller).send(answer)
                call.caller.close()


@dataclasses.dataclass
class Call:
    caller: socket.socket | None  # None once the caller went away
    command: str
    started: float


def warm_up() -> None:
    """Import and build what a served call uses, and run one parse per command, so a copy starts at its command's
    own work: typer, pydantic's validators, stablekit's commands, the client."""
    import typer

    from . import cli, client, client_follow  # noqa: F401 - imported for the copies

    for name in sorted(WARM_COMMANDS):
        with contextlib.suppress(Exception):
            command = cli.plain_flags(typer.main.get_command(cli.build_app(only=name)))
            context = command.make_context("stablekit", [name], resilient_parsing=True)
            command.get_command(context, name).make_context(name, [], parent=context, resilient_parsing=True)


def hung_up(sock: socket.socket) -> bool:
    """Whether the other side has closed the connection (it sends nothing after its call)."""
    readable, _, _ = select.select([sock], [], [], 0)
    return bool(readable) and sock.recv(1, socket.MSG_PEEK) == b""


def run_copy(call: dict, fds: list[int], sockets: list, own_fds: list[int]) -> None:
    """In the forked copy: become the caller (its streams, folder, environment, umask, arguments), run the CLI,
    exit with its code. Never returns."""
    code = 1
    try:
        become_caller(call, fds, sockets, own_fds)
    except KeyboardInterrupt:  # Ctrl-C passed on before the command began
        os._exit(130)
    except BaseException as err:  # noqa: BLE001 - the copy must never go back to the warm client's loop
        with contextlib.suppress(Exception):
            os.write(2, f"Error: the stablekit server's warm client could not take this call ({err})\n"
                        "Hint: run it again with --no-server\n".encode())
        os._exit(1)
    try:
        from .cli import main

        main()
        code = 0
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    except KeyboardInterrupt:
        code = 130
    except BaseException:  # noqa: BLE001 - what an interpreter does with an uncaught exception
        with contextlib.suppress(Exception):
            import traceback

            traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)


def become_caller(call: dict, fds: list[int], sockets: list, own_fds: list[int]) -> None:
    signal.set_wakeup_fd(-1)
    for sock in sockets:
        with contextlib.suppress(OSError):
            sock.close()
    for fd in own_fds:
        with contextlib.suppress(OSError):
            os.close(fd)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for signum in call.get("ignored_signals", []):
        signal.signal(signum, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, COPY_SIGNALS)  # one sent meanwhile acts now
    for target, fd in enumerate(fds):
        os.dup2(fd, target, inheritable=True)
        os.close(fd)
    fds.clear()
    os.chdir(call["cwd"])
    os.umask(call["umask"])
    os.environ.clear()
    os.environ.update(call["env"])
    sys.argv = [sys.argv[0], *call["argv"]]
    sys.path[:] = call["path"]  # where the caller's own imports would look (its folder, for python -m)
    sys.path_importer_cache.clear()
    set_up_streams(call["streams"])


def set_up_streams(settings: list[dict]) -> None:
    """sys.stdin, sys.stdout and sys.stderr over the caller's streams, as its interpreter had set them up."""
    streams = []
    for fd, setting in enumerate(settings):
        raw = io.FileIO(fd, "r" if fd == 0 else "w", closefd=False)
        buffered = io.BufferedReader(raw) if fd == 0 else io.BufferedWriter(raw)
        streams.append(io.TextIOWrapper(buffered, encoding=setting["encoding"], errors=setting["errors"],
                                        line_buffering=setting["line_buffering"],
                                        write_through=setting["write_through"]))
    sys.stdin, sys.stdout, sys.stderr = streams
    sys.__stdin__, sys.__stdout__, sys.__stderr__ = streams


def log(message: str) -> None:
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.write(f"{time.strftime('%H:%M:%S')} {message}\n")
        sys.stderr.flush()


if __name__ == "__main__":
    WarmClient(int(sys.argv[1])).serve()
