"""The console script: a command that talks to `stablekit serve` starts in the server's warm client when one runs.

A served call spends most of its start importing typer and pydantic and building its command. The server keeps a
process that has done all that (stablekit.warm_client); this module, standard library only, hands it the call
(arguments, working folder, environment, umask and the three standard streams themselves) and waits: the warm
client forks a copy that runs stablekit.cli.main exactly as this process would have, writing to this process's
terminal or pipes. Signals sent here (Ctrl-C, SIGTERM, SIGHUP) are passed on, and the copy's exit code is this
process's. Anything else, or any doubt (no warm client, another stablekit or Python, interpreter options such as
-X importtime), runs stablekit.cli.main here as before.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import time

# The commands a warm client starts: those that send work to the server or ask it something. `serve` itself,
# `chat` (a conversation in this terminal, never served) and the local-only commands start here.
WARM_COMMANDS = frozenset({"image", "video", "audio", "mesh", "text", "batch", "ps", "unload", "stop"})
PROTOCOL = 1
CONNECT_TIMEOUT = 1.0
START_TIMEOUT = 5.0  # the warm client forks as soon as it has read the call
ANSWER_GRACE = 5.0  # after the copy ended: how long its exit code may take to come
FORWARDED = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT") if hasattr(signal, name))


def main() -> None:
    """The `stablekit` console script and `python -m stablekit`."""
    if eligible(sys.argv[1:]):
        code = launch(sys.argv[1:])
        if code is not None:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    from .cli import main as run_here

    run_here()


def eligible(args: list[str]) -> bool:
    """Whether this call may start in a warm client: a command that talks to the server, which is not turned off."""
    return (command_word(args) in WARM_COMMANDS and "--no-server" not in args and hasattr(socket, "send_fds")
            and os.environ.get("STABLEKIT_SERVER", "").strip() != "0" and not os.environ.get("_STABLEKIT_COMPLETE"))


def command_word(args: list[str]) -> str | None:
    """The word that names the subcommand: the first one after any -q."""
    return next((arg for arg in args if arg not in ("-q", "--quiet")), None)


def socket_path():
    from .paths import stablekit_home

    return stablekit_home() / "server" / "launch"


def identity() -> dict:
    """What must match for the warm client's copy to behave as this process would: the same stablekit, read by
    the same interpreter from the same module path, with the same interpreter options (-X importtime, -W, -O...)."""
    from . import __file__ as package_file
    from . import __version__

    flags = sys.flags
    return {"version": __version__, "package": package_file, "executable": sys.executable, "protocol": PROTOCOL,
            "pythonpath": os.environ.get("PYTHONPATH", ""), "xoptions": {k: v for k, v in sys._xoptions.items()},
            "warnoptions": list(sys.warnoptions),
            "flags": [flags.ignore_environment, flags.isolated, flags.optimize, flags.verbose, int(flags.dev_mode),
                      flags.no_user_site, flags.no_site, flags.bytes_warning, flags.utf8_mode,
                      getattr(flags, "safe_path", 0)]}


def launch(args: list[str]) -> int | None:
    """Run the call in the warm client; its exit code, or None when no warm client took it (run it here)."""
    try:
        path = socket_path()
        info = path.lstat()
        if info.st_uid != os.getuid() or path.parent.stat().st_mode & 0o077:
            return None  # the normal path says why it will not use this server
        call = {**identity(), "argv": args, "cwd": os.getcwd(), "env": dict(os.environ), "umask": current_umask(),
                "path": sys.path,
                "streams": [stream_settings(stream) for stream in (sys.stdin, sys.stdout, sys.stderr)]}
    except Exception:  # no socket, no STABLEKIT_HOME, a deleted working folder: run here, which says what is wrong
        return None
    from .errors import StablekitError
    from .wire import Channel, unix_address

    signals = Forwarder()
    call["ignored_signals"] = signals.ignored
    channel = Channel(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM))
    try:
        channel.sock.settimeout(CONNECT_TIMEOUT)
        unix_address(path, channel.sock.connect)
        channel.send(call)
        answer = channel.receive(START_TIMEOUT) or {}
        if answer.get("ready") is True:  # the streams go only to a warm client that is answering
            socket.send_fds(channel.sock, [b"F"], [0, 1, 2])
            answer = channel.receive(START_TIMEOUT) or {}
    except (OSError, ValueError, StablekitError):
        answer = {}
    pid = answer.get("pid")
    if not isinstance(pid, int):  # refused (another stablekit, the server stopping) or gone before it forked
        channel.close()
        return signals.give_up()
    signals.pass_to(pid)
    answer = end_of(channel, pid)
    if isinstance(answer.get("exit"), int):
        return answer["exit"]
    if isinstance(answer.get("signal"), int):
        die_by(answer["signal"])
    wait_gone(pid)
    sys.stderr.write(f"Error: the stablekit server's warm client went away while running this command (pid {pid}); "
                     "its outcome is unknown\nHint: check the outputs, or run it again with --no-server\n")
    return 1


def end_of(channel, pid: int) -> dict:
    """How the copy ended ({"exit": N} or {"signal": N}); {} when the warm client cannot tell any more: it closed
    the connection, or the copy has ended and no answer came within ANSWER_GRACE (a stopped warm client)."""
    ended = None
    while True:
        try:
            return channel.receive(1.0) or {}
        except TimeoutError:
            if ended is None and not running(pid):
                ended = time.monotonic()
            if ended is not None and time.monotonic() - ended > ANSWER_GRACE:
                return {}
        except (OSError, ValueError):
            return {}


class Forwarder:
    """Signals that arrive here go to the copy running the call; those that arrive before it runs wait for it.
    A signal this process ignores (a background job's SIGINT) is left alone, and the copy ignores it too."""

    def __init__(self) -> None:
        self.pid: int | None = None
        self.pending: list[int] = []
        self.previous = {signum: signal.getsignal(signum) for signum in FORWARDED}
        self.ignored = [int(signum) for signum, handler in self.previous.items() if handler == signal.SIG_IGN]
        for signum in FORWARDED:
            if signum not in self.ignored:
                signal.signal(signum, self._received)

    def _received(self, signum, frame) -> None:
        if self.pid is None:
            self.pending.append(signum)
            return
        try:
            os.kill(self.pid, signum)
        except OSError:
            pass

    def pass_to(self, pid: int) -> None:
        self.pid = pid
        for signum in self.pending:
            self._received(signum, None)

    def give_up(self) -> int | None:
        """No copy runs the call: this process's own handlers again; a signal that came meanwhile ends it."""
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
        if not self.pending:
            return None
        if self.pending[0] == signal.SIGINT:
            return 130
        die_by(self.pending[0])
        return 1


def die_by(signum: int) -> None:
    """End as the copy ended (a shell tells a command killed by a signal from one that failed)."""
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        signal.signal(signum, signal.SIG_DFL)
    except (OSError, ValueError):
        pass  # SIGKILL has no handler to reset
    try:
        os.kill(os.getpid(), signum)
    except (OSError, ValueError):
        pass
    os._exit(128 + signum)


def wait_gone(pid: int) -> None:
    while running(pid):
        time.sleep(0.1)


def running(pid: int) -> bool:
    """Whether the process still runs (a zombie nobody reaps has ended)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def current_umask() -> int:
    """As stablekit.outputs.current_umask, which this module does not import: it starts every served call, on the
    standard library only."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def stream_settings(stream) -> dict:
    """How this interpreter set a standard stream up, for the copy to set its own up the same way."""
    if stream is None:
        raise OSError("a standard stream is closed")
    stream.fileno()  # raises when it is closed or not a file
    return {"encoding": stream.encoding, "errors": stream.errors, "line_buffering": stream.line_buffering,
            "write_through": getattr(stream, "write_through", False)}
