"""`stablekit serve`: one process that keeps models loaded between commands, on a private Unix socket.

The wire is JSON lines (stablekit.client speaks the other side). A client sends one message:
  {"type": "job", "jobs": [{"job": JOB OBJECT, "family"?, "config"?}], "sink": {...}, "cwd": ..., "version": ...}
  {"type": "ps"} · {"type": "unload", "model": ID or null} · {"type": "stop"}
and, while its job is queued or running, may send {"type": "cancel"} (closing the connection cancels too).
The server answers a job with {"type": "queued", "ahead": N, "pid": PID}, then streams
  {"type": "started"} · "stage"/"note" {text} · "task" {id, description, total} · "step" {id, done, total} ·
  "end" {id} · "text" {piece} · "result" {record} · "alive" (every second)
and ends with {"type": "done", "exit_code": 0 | 130} or {"type": "error", "message", "hint", "exit_code"}; or,
before "started", {"type": "refused", "message"} (the server is stopping: the client runs the job itself).

Jobs run one at a time, in arrival order, on the main thread, with the client's working folder; the outputs are
written here through the normal Sink (their sidecars name the server). Connection threads only read and
acknowledge; the job thread alone touches models.
"""

from __future__ import annotations

import collections
import contextlib
import os
import signal
import socket
import sys
import threading
import time
import traceback
from datetime import datetime, timezone
from typing import Any

from . import __version__
from .client import HEARTBEAT, PROTOCOL, Channel, lock_path, log_path, pid_path, server_dir, socket_path
from .errors import StablekitError
from .relay import Relay, Work, guarded
from .server_start import DEFAULT_KEEP_ALIVE, format_duration

WARM_CLIENT_STARTS = 4  # the first, and three replacements


class WorkQueue:
    """Arrival order for jobs; an unload goes before waiting jobs (it frees memory, it loads nothing)."""

    def __init__(self) -> None:
        self._items: collections.deque[Work] = collections.deque()
        self._ready = threading.Condition()

    def put(self, work: Work, first: bool = False) -> int:
        with self._ready:
            ahead = len(self._items)
            (self._items.appendleft if first else self._items.append)(work)
            self._ready.notify()
            return 0 if first else ahead

    def get(self, timeout: float) -> Work | None:
        with self._ready:
            if not self._items:
                self._ready.wait(timeout)
            return self._items.popleft() if self._items else None

    def __len__(self) -> int:
        return len(self._items)

    def drain(self) -> list[Work]:
        with self._ready:
            items, self._items = list(self._items), collections.deque()
            return items


class Server:
    """Accepts connections on the socket, queues their work, runs it on the calling (main) thread."""

    def __init__(self, keep_alive: float = DEFAULT_KEEP_ALIVE, log=None, log_file=None) -> None:
        from .sessions import SessionPool

        self.keep_alive = keep_alive
        self.log_stream = log or sys.stderr
        self.log_file = log_file  # where the log goes when detached (None: the terminal)
        self._log_lock = threading.Lock()
        self.relay = Relay(self.log)
        self.pool = SessionPool(self.relay)
        self.queue = WorkQueue()
        self.started = time.monotonic()
        self.started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        self.last_active = time.monotonic()
        self.current: Work | None = None
        self.served = 0
        self.stopping: str | None = None
        self._counter = 0
        self._admit = threading.Lock()
        self._sock: socket.socket | None = None
        self._lock_file = None
        self._home = os.getcwd()
        self.warm_client = None
        self.warm_client_starts = 0

    def log(self, message: str) -> None:
        with self._log_lock:
            self.log_stream.write(f"{time.strftime('%H:%M:%S')} {message}\n")
            self.log_stream.flush()

    # --- lifetime ----------------------------------------------------------------------------------------

    def bind(self) -> None:
        """Take the lock (one server per home), remove a stale socket, listen on a private one."""
        import fcntl

        folder = server_dir()
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        if folder.stat().st_uid != os.getuid():
            raise StablekitError(f"{folder} belongs to another user", hint="point STABLEKIT_HOME at a folder you own")
        os.chmod(folder, 0o700)
        self._lock_file = open(lock_path(), "a")  # noqa: SIM115 - held for the server's life
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock_file.close()
            pid = pid_path().read_text().strip() if pid_path().is_file() else "?"
            raise StablekitError(f"a stablekit server is already running for this STABLEKIT_HOME (pid {pid})",
                                 hint="`stablekit ps` shows it; `stablekit stop` stops it") from None
        socket_path().unlink(missing_ok=True)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            from .client import unix_address

            unix_address(socket_path(), sock.bind)
        finally:
            os.umask(old)
        os.chmod(socket_path(), 0o600)
        sock.listen(64)
        self._sock = sock
        pid_path().write_text(f"{os.getpid()}\n")

    def serve(self) -> None:
        """Run until stopped (`stablekit stop`, SIGTERM, Ctrl-C) or idle for the keep-alive with nothing loaded."""
        self.bind()
        self.log(f"stablekit {__version__} serving on {socket_path()} (pid {os.getpid()}; keep-alive "
                 f"{format_duration(self.keep_alive) if self.keep_alive else 'forever'})")
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        threading.Thread(target=self._accept, name="stablekit-accept", daemon=True).start()
        self._start_warm_client()
        try:
            self._loop()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self._shut_down()

    def _on_signal(self, signum, frame) -> None:
        self.request_stop(f"signal {signal.Signals(signum).name}")

    def request_stop(self, why: str) -> None:
        if self.stopping is None:
            self.stopping = why
        current = self.current
        if current is not None:
            current.cancelled.set()

    def _start_warm_client(self) -> None:
        """The process that starts this server's clients already warm (stablekit.launch, stablekit.warm_client).
        Its own session: the server's terminal's Ctrl-C is not for it; it ends when the server does."""
        import subprocess

        self.warm_client_starts += 1
        try:
            self.warm_client = subprocess.Popen([sys.executable, "-m", f"{__package__}.warm_client", str(os.getpid())],
                                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                                start_new_session=True)
        except OSError as err:
            self.log(f"no warm client ({err}); clients start the usual way")

    def _keep_warm_client(self) -> None:
        """A warm client that ended (killed, or crashed) is replaced, a few times at most: meanwhile, and after,
        clients start the usual way."""
        process = self.warm_client
        if (process is None or process.poll() is None or process.returncode == 0  # it chose to end, and said why
                or self.warm_client_starts >= WARM_CLIENT_STARTS):
            return
        self.log(f"the warm client (pid {process.pid}) ended with code {process.returncode}; starting another")
        self._start_warm_client()

    def _shut_down(self) -> None:
        self.log(f"stopping ({self.stopping or 'done'})")
        with contextlib.suppress(OSError):
            self._sock.close()
        if self.warm_client is not None:
            with contextlib.suppress(OSError):
                self.warm_client.terminate()  # it takes no new calls; the copies running finish as clients do
        for work in self.queue.drain():  # not started: their clients run them themselves
            work.send({"type": "refused", "message": "the server stopped before the job started"})
            work.finished.set()
        self.pool.close()
        for path in (socket_path(), pid_path()):
            path.unlink(missing_ok=True)
        if self._lock_file is not None:
            self._lock_file.close()

    def _loop(self) -> None:
        while self.stopping is None:
            work = self.queue.get(timeout=1.0)
            if work is None:
                self._tick()
                self._keep_warm_client()
                continue
            self.current = work
            try:
                self._do(work)
            finally:
                self.current = None
                self.last_active = time.monotonic()
                work.finished.set()

    def _tick(self) -> None:
        """Keep-alive: release models idle that long; exit when idle that long with nothing loaded."""
        if not self.keep_alive:
            return
        self.pool.release_idle(self.keep_alive)
        idle = time.monotonic() - self.last_active
        if not self.pool.held() and not len(self.queue) and idle >= self.keep_alive:
            self.stopping = f"idle for {format_duration(idle)} with nothing loaded"

    # --- connections -------------------------------------------------------------------------------------

    def _accept(self) -> None:
        while self.stopping is None:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), name="stablekit-client", daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        channel = Channel(conn)
        try:
            message = channel.receive(timeout=10.0)
            if message is None:
                return
            kind = message.get("type")
            if kind in ("job", "unload") and (message.get("protocol"), message.get("version")) != (PROTOCOL,
                                                                                                __version__):
                channel.send({"type": "refused", "message": f"the server runs stablekit {__version__}, the "
                              f"client {message.get('version')}; `stablekit stop`, then start it again"})
            elif kind == "ps":
                channel.send(self.status())
            elif kind == "stop":
                self.request_stop("stablekit stop")
                channel.send({"type": "stopping", "pid": os.getpid()})
            elif kind in ("job", "unload") and self.stopping is not None:
                channel.send({"type": "refused", "message": f"the server is stopping ({self.stopping})"})
            elif kind in ("job", "unload"):
                conn.settimeout(60.0)  # sending only, from here: a client that stops reading for a minute is gone
                with self._admit:  # numbers in arrival order, queued in the same order
                    self._counter += 1
                    work = Work(self._counter, message, channel)
                    ahead = self.queue.put(work, first=kind == "unload")
                work.send({"type": "queued", "ahead": ahead + (self.current is not None), "pid": os.getpid()})
                self._watch(work)
            else:
                channel.send({"type": "error", "message": f"unknown message {kind!r}", "exit_code": 1})
        except (OSError, ValueError, TimeoutError):
            pass
        finally:
            channel.close()

    def _watch(self, work: Work) -> None:
        """Until the work is finished: read the client's cancel (or its hang-up), say "alive" every second."""
        import select

        while not work.finished.is_set():
            if work.gone:
                work.finished.wait()
                return
            readable, _, _ = select.select([work.channel.sock], [], [], HEARTBEAT)
            if not readable:
                work.send({"type": "alive"})
                continue
            try:
                messages = work.channel.read_ready()
            except (OSError, ValueError):
                messages = None
            if messages is None:
                work.gone = True
                if work.answered:
                    return
            if messages is None or any(m.get("type") == "cancel" for m in messages):
                if not work.cancelled.is_set():
                    self.log(f"job {work.number}: cancelled by the client")
                work.cancelled.set()

    # --- work --------------------------------------------------------------------------------------------

    def _do(self, work: Work) -> None:
        if work.message["type"] == "unload":
            model = work.message.get("model")
            released = self.pool.unload(model)
            self.log(f"unloaded {', '.join(released) or 'nothing'}")
            work.send({"type": "unloaded", "models": released, "model": model})
            return
        if work.cancelled.is_set():
            work.send({"type": "done", "exit_code": 130})
            return
        started = time.monotonic()
        self.relay.work = work
        try:
            os.chdir(work.message["cwd"])
            code = self._run(work)
            self.log(f"job {work.number}: {'cancelled' if code == 130 else 'done'} in "
                     f"{time.monotonic() - started:.2f} s")
            work.send({"type": "done", "exit_code": code})
        except KeyboardInterrupt:
            if self.stopping is not None or not work.cancelled.is_set():
                self.stopping = self.stopping or "interrupted"
                self._fail(work, f"the stablekit server was stopped during the job ({self.stopping})", 1,
                           "outputs finished before it stopped are listed above; run the command again")
            else:
                work.send({"type": "done", "exit_code": 130})
                self.log(f"job {work.number}: cancelled after {time.monotonic() - started:.2f} s")
        except StablekitError as err:
            self.log(f"job {work.number}: Error: {err.message}")
            self._fail(work, err.message, err.exit_code, err.hint)
        except Exception as err:  # a bug: the client shows the traceback, as an in-process run would
            text = traceback.format_exc()
            self.log(f"job {work.number}: {type(err).__name__}: {err}\n{text}")
            work.send({"type": "error", "message": f"{type(err).__name__}: {err} (in the stablekit server)",
                       "hint": f"the server's log: {log_path()}", "exit_code": 1, "traceback": text})
        finally:
            self.relay.work = None
            os.chdir(self._home)
            if self.keep_alive:
                self.pool.release_idle(self.keep_alive)

    def _run(self, work: Work) -> int:
        from . import runner
        from .sink import Sink, TextStreamSink

        message = work.message
        served = {"server": {"pid": os.getpid(), "started": self.started_at, "job": work.number}}
        if message["sink"]["kind"] == "batch":
            from . import served_batch

            self.log(f"job {work.number}: a batch of {len(message['jobs'])} for pid {message.get('client_pid')} "
                     f"in {message['cwd']}")
            code = served_batch.run(work, self.relay, self.pool, _job, served)
            self.served += 1
            if self.stopping is not None:  # the server's own stop, not the client's cancel
                raise KeyboardInterrupt
            return code
        jobs = [_job(entry) for entry in message["jobs"]]
        what = ", ".join(sorted({f"{job.command} {job.spec.id}" for job in jobs}))
        self.log(f"job {work.number}: {what} for pid {message.get('client_pid')} in {message['cwd']}")
        work.send({"type": "started"})
        options = message["sink"]
        if options["kind"] == "text":
            sink = guarded(TextStreamSink)(self.relay.text, as_json=options["as_json"], note=self.relay.note,
                                            on_result=lambda item: work.send({"type": "result", "record": item}))
        else:
            sink = guarded(Sink)(options["output_dir"], overwrite=options["overwrite"], total=options["total"],
                                  recorded=served,
                                  on_result=lambda item: work.send({"type": "result", "record": item}))
        sink.work = work
        runner.run(jobs, sink, self.relay, pool=self.pool)
        self.served += 1
        completions = getattr(sink, "completions", None)
        interrupted = work.interrupted or bool(completions and completions[-1].finish_reason == "interrupted")
        return 130 if interrupted else 0

    def _fail(self, work: Work, message: str, code: int, hint: str | None) -> None:
        work.send({"type": "error", "message": message, "hint": hint, "exit_code": code})
        work.finished.set()

    def status(self) -> dict[str, Any]:
        current, warm = self.current, self.warm_client
        running = None
        if current is not None and current.message.get("type") == "job":
            jobs = current.message["jobs"]
            running = {"job": current.number, "client_pid": current.message.get("client_pid"),
                       "commands": sorted({e["job"]["command"] for e in jobs}),
                       "models": sorted({e["job"]["model"] for e in jobs})}
        return {"type": "status", "pid": os.getpid(), "version": __version__, "started": self.started_at,
                "uptime_seconds": round(time.monotonic() - self.started, 1), "keep_alive_seconds": self.keep_alive,
                "socket": str(socket_path()), "log": str(self.log_file) if self.log_file else None,
                "warm_client_pid": warm.pid if warm is not None and warm.poll() is None else None,
                "jobs_served": self.served,
                "queued": len(self.queue), "current_job": running, "loads": len(self.pool.loads),
                "models": self.pool.status(), "rss_gib": _rss_gib()}


def _job(entry: dict[str, Any]):
    """The client's job object made a Job again, resolved here as the client resolved it."""
    from .jobs import COMMANDS, field_types, job_from

    values = entry["job"]
    command = values.get("command")
    if command in COMMANDS:  # else job_from says what is wrong
        values = {k: v for k, v in values.items() if k in field_types(command)}
    return job_from(command, values, where="server", family=entry.get("family"), config=entry.get("config"))


def _rss_gib() -> float | None:
    try:
        with open("/proc/self/statm") as statm:
            return round(int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**30, 3)
    except (OSError, ValueError, IndexError):
        return None
