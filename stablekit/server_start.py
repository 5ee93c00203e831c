"""Starting `stablekit serve` in the background, and the durations its `--keep-alive` and `ps` speak."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import sys
import time
from typing import Any

from .client import connect, log_path, pid_path, server_dir, socket_path
from .errors import StablekitError, UsageError

DEFAULT_KEEP_ALIVE = 600.0
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?")
_UNITS = {"ms": 0.001, "s": 1, None: 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """'10m', '90s', '1h30m', '0' (never), a bare number of seconds."""
    text = text.strip().lower()
    parts = list(_DURATION.finditer(text))
    if not parts or "".join(p.group(0) for p in parts).replace(" ", "") != text.replace(" ", ""):
        raise UsageError(f"--keep-alive {text!r}: not a duration", hint="e.g. 10m, 90s, 1h30m, or 0 for never")
    return sum(float(p.group(1)) * _UNITS[p.group(2)] for p in parts)


def format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s" if seconds % 60 else f"{seconds // 60}m"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def start_detached(keep_alive: float, wait: float = 60.0) -> dict[str, Any]:
    """Start a server in the background (its output to the log under STABLEKIT_HOME); returns its `ps` status
    once it answers."""
    import subprocess

    if not hasattr(socket, "AF_UNIX"):
        raise StablekitError("`stablekit serve` needs Unix domain sockets (not available on this system)")
    if connect() is not None:
        pid = pid_path().read_text().strip() if pid_path().is_file() else "?"
        raise StablekitError(f"a stablekit server is already running for this STABLEKIT_HOME (pid {pid})",
                             hint="`stablekit ps` shows it; `stablekit stop` stops it")
    folder = server_dir()
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(folder, 0o700)
    with open(log_path(), "a") as log:
        process = subprocess.Popen([sys.executable, "-m", "stablekit", "serve", "--keep-alive", str(keep_alive),
                                    "--log-file", str(log_path())],
                                   stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
                                   env=_server_env())
    from .client import request

    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise StablekitError(f"the server exited at start (code {process.returncode})",
                                 hint=f"see its log: {log_path()}")
        with contextlib.suppress(StablekitError):
            status = request({"type": "ps"}) if socket_path().exists() else None
            if status is not None and status.get("pid") == process.pid:
                return status
        time.sleep(0.1)
    raise StablekitError(f"the server did not answer within {wait:.0f} s", hint=f"see its log: {log_path()}")


def _server_env() -> dict[str, str]:
    """The environment a detached server runs with: this one, with STABLEKIT_HOME made absolute (the server
    changes folder for each job)."""
    from .paths import stablekit_home

    return {**os.environ, "STABLEKIT_HOME": str(stablekit_home().resolve())}
