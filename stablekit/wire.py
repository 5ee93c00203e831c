"""The wire of `stablekit serve`: JSON objects, one per line, over a Unix socket (server, client, warm client).

Standard library only, and little of it: stablekit.launch reads it on every served call's start.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path

from .errors import StablekitError


class Channel:
    """One connection: JSON objects out, one per line; JSON objects in, with a bounded wait for each."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._buffer = b""

    def send(self, message: dict) -> None:
        self.sock.sendall(json.dumps(message, default=str).encode() + b"\n")

    def receive(self, timeout: float | None) -> dict | None:
        """The next message; None when the other side closed. Raises TimeoutError after `timeout` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise TimeoutError
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                raise TimeoutError from None
            except (ConnectionResetError, BrokenPipeError):
                chunk = b""
            if not chunk:
                return None
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return json.loads(line)

    def read_ready(self) -> list[dict] | None:
        """One read, for a caller that knows data is waiting (select): the complete messages so far; None when
        the other side closed."""
        chunk = self.sock.recv(65536)
        if not chunk:
            return None
        self._buffer += chunk
        *lines, self._buffer = self._buffer.split(b"\n")
        return [json.loads(line) for line in lines if line.strip()]

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


def unix_address(path: Path, use: Callable[[str], None]) -> None:
    """Call `use(address)` (bind or connect) with `path`, through /proc/self/fd when it is longer than a
    Unix socket address may be (about 100 bytes; deep temporary folders exceed it)."""
    if len(os.fsencode(path)) < 100:
        use(str(path))
        return
    if not os.path.isdir("/proc/self/fd"):
        raise StablekitError(f"the server's socket path is too long: {path}", hint="use a shorter STABLEKIT_HOME")
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        use(f"/proc/self/fd/{fd}/{path.name}")
    finally:
        os.close(fd)


