"""`stablekit doctor` says whether the hub answers (one bounded request, none when offline) and whether the
tools that some formats need are there."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from conftest import run_cli


def doctor(**env: str) -> dict:
    result = run_cli("doctor", "--json", env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_offline_is_not_checked_and_says_why():
    hub = doctor()["hub"]  # the test fixture sets HF_HUB_OFFLINE=1
    assert hub["offline"] is True and hub["reachable"] is None and "HF_HUB_OFFLINE" in hub["detail"]


@pytest.fixture
def hub_server():
    seen = []

    class Handler(BaseHTTPRequestHandler):
        def do_HEAD(self):  # noqa: N802 - http.server's name
            seen.append(self.path)
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}", seen
    server.shutdown()


def test_a_hub_that_answers_is_reachable(hub_server):
    url, seen = hub_server
    hub = doctor(HF_HUB_OFFLINE="0", HF_ENDPOINT=url)["hub"]
    assert hub["reachable"] is True and hub["endpoint"] == url and seen


def test_an_unreachable_hub_is_reported_quickly():
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    started = time.monotonic()
    result = run_cli("doctor", env={"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": f"http://127.0.0.1:{port}"})
    assert result.returncode == 0, result.stderr
    line = next(line for line in result.stdout.splitlines() if line.startswith("hub         http"))
    assert "not reachable" in line and time.monotonic() - started < 60


def test_ffmpeg_and_rembg_are_reported():
    from importlib.util import find_spec

    tools = doctor()["tools"]
    assert tools["ffmpeg"]["available"] is True and "ffmpeg" in tools["ffmpeg"]["path"]
    has_rembg = find_spec("rembg") is not None and find_spec("onnxruntime") is not None
    assert tools["rembg"]["available"] is has_rembg
    if not has_rembg:
        assert "--no-remove-bg" in tools["rembg"]["detail"]
