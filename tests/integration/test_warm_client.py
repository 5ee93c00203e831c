"""The server's warm client (stablekit.launch hands a call to stablekit.warm_client, which forks a copy that runs
it): real processes throughout, since a process's start, streams, signals and exit code are the subject."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_serve import QUIET_HEARTBEAT, outputs, start, stop

from conftest import run_process
from stablekit import launch


def warm(served, wait: float = 60) -> int:
    """The warm client's pid, once it takes calls."""
    deadline = time.monotonic() + wait
    while "warm client ready" not in served.text():
        assert time.monotonic() < deadline and served.process.poll() is None, served.text()
        time.sleep(0.05)
    return served.status()["warm_client_pid"]


@pytest.fixture
def server(stablekit_home, tmp_path):
    """A server whose warm client takes calls."""
    served = start(stablekit_home, tmp_path / "server.log", "--keep-alive", "0")
    try:
        warm(served)
        yield served
    finally:
        stop(served)


def copies(served) -> list[tuple[int, str, int]]:
    """(pid, command, exit code) of each call a warm client's copy ran, from the server's log."""
    return [(int(pid), command, int(code))
            for pid, command, code in re.findall(r"client (\d+) \((\w+)\): exit (-?\d+)", served.text())]


def errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith(("Error:", "Hint:"))]


def gone(pid: int, wait: float = 30) -> bool:
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def test_a_served_call_runs_in_a_warm_copy_with_the_callers_folder_and_gives_the_same_files(server, tmp_path):
    here, there = tmp_path / "here", tmp_path / "there"
    here.mkdir()
    there.mkdir()
    argv = ["image", "a cat", "--model", "tiny-sd", "--seed", "4", "-o", "pics/cat.png"]
    local = run_process(*argv, "--no-server", cwd=here, env=QUIET_HEARTBEAT)
    served = run_process(*argv, cwd=there, env=QUIET_HEARTBEAT)
    assert local.returncode == served.returncode == 0, (local.stderr, served.stderr)
    assert served.stdout == local.stdout.replace(str(here), str(there)), "the same path printed, relative to its folder"
    assert outputs(there) == outputs(here) and (there / "pics" / "cat.png").is_file()
    [(pid, command, code)] = copies(server)
    assert (command, code) == ("image", 0)
    assert f"job 1: image tiny-sd for pid {pid} in {there}" in server.text(), "the copy sent the job"
    assert server.status()["jobs_served"] == 1


def test_errors_exit_codes_and_the_callers_environment_are_those_of_a_run_here(server, tmp_path):
    for argv, code in ((["image", "a cat", "--steps", "many"], 2),
                       (["image", "a cat", "--model", "no-such-model"], 2),
                       (["image", "a cat", "-m", "tiny-sd", "--seed", "1", "-i", str(tmp_path / "gone.png")], 2)):
        for env in ({}, {"STABLEKIT_DEBUG": "1"}):  # the copy reads the caller's environment, not the server's
            here = run_process(*argv, env={**env, "STABLEKIT_SERVER": "0"})
            served = run_process(*argv, env=env)
            assert here.returncode == served.returncode == code, (here.stderr, served.stderr)
            assert served.stdout == here.stdout == ""
            if env:  # the tracebacks differ: one is raised by the job run here, the other by its server's answer
                assert "Traceback" in served.stderr and "Traceback" in here.stderr, "STABLEKIT_DEBUG reached the copy"
                assert errors(served.stderr) == errors(here.stderr) != []
            else:
                assert served.stderr == here.stderr
    assert [command for _, command, _ in copies(server)] == ["image"] * 6
    assert {code for _, _, code in copies(server)} == {2}
    drawn = [run_process("image", "a cat", "--model", "tiny-sd", "--image", str(tmp_path / "gone.png")).stderr
             for _ in range(2)]
    assert all(text.startswith("seed ") for text in drawn) and drawn[0] != drawn[1], "each copy draws its own seed"


def test_stdin_umask_and_a_run_the_copy_does_itself(server, tmp_path):
    """--prompts-file - runs in the client (here: the copy), reading the caller's stdin, writing with its umask."""
    warm(server)
    result = subprocess.run([sys.executable, "-m", "stablekit", "image", "--prompts-file", "-", "--model", "tiny-sd",
                             "--seed", "1", "-d", str(tmp_path / "out"), "-q"], input="a cat\na dog\n",
                            capture_output=True, text=True, env=dict(os.environ), umask=0o077, timeout=600)
    assert result.returncode == 0, result.stderr
    written = [Path(line) for line in result.stdout.split()]
    assert len(written) == 2 and all(path.is_file() for path in written)
    assert {path.stat().st_mode & 0o777 for path in written} == {0o600}
    assert [(command, code) for _, command, code in copies(server)] == [("image", 0)]


def test_a_caller_killed_takes_its_copy_and_its_job_with_it(server, tmp_path):
    process = subprocess.Popen([sys.executable, "-m", "stablekit", "image", "cat", "--model", "tiny-sd", "-n", "200",
                                "--seed", "1", "-d", str(tmp_path / "out")], stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True, env=dict(os.environ))
    assert process.stdout.readline(), "the first image"
    process.kill()
    process.wait(60)
    deadline = time.monotonic() + 120
    while not re.search(r"client \d+ \(image\): (exit|signal)", server.text()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert re.search(r"job 1: cancelled", server.text()), server.text()
    assert server.status()["current_job"] is None and server.process.poll() is None


def test_ctrl_c_goes_to_the_copy_and_its_exit_code_comes_back(server, tmp_path):
    process = subprocess.Popen([sys.executable, "-m", "stablekit", "image", "cat", "--model", "tiny-sd", "-n", "200",
                                "--seed", "1", "-d", str(tmp_path / "out")], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=dict(os.environ))
    assert process.stdout.readline(), process.communicate(timeout=300)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=300)
    assert process.returncode == 130 and "Traceback" not in err, err
    assert [(command, code) for _, command, code in copies(server)] == [("image", 130)]


def test_a_warm_client_killed_mid_call_fails_the_call_clearly_and_the_server_starts_another(server, tmp_path):
    old = server.status()["warm_client_pid"]
    process = subprocess.Popen([sys.executable, "-m", "stablekit", "image", "cat", "--model", "tiny-sd", "-n", "200",
                                "--seed", "1", "-d", str(tmp_path / "out")], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=dict(os.environ))
    assert process.stdout.readline(), process.communicate(timeout=300)
    os.kill(old, signal.SIGKILL)
    assert gone(old)
    process.send_signal(signal.SIGINT)  # still reaches the copy, which cancels its job
    _, err = process.communicate(timeout=300)
    assert process.returncode == 1 and "Traceback" not in err, err
    assert err.splitlines()[-2].startswith("Error: the stablekit server's warm client went away"), err
    assert not list((tmp_path / "out").glob("*partial*"))
    deadline = time.monotonic() + 60
    while server.text().count("warm client ready") < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert f"the warm client (pid {old}) ended with code -9; starting another" in server.text()
    assert server.status()["warm_client_pid"] not in (None, old)
    after = run_process("image", "a dog", "--model", "tiny-sd", "--seed", "2", "-d", str(tmp_path / "after"))
    assert after.returncode == 0 and Path(after.stdout.strip()).is_file(), after.stderr
    assert [command for _, command, _ in copies(server)] == ["image"], "the new warm client started it"


def test_a_copy_killed_ends_its_caller_the_same_way(server, tmp_path):
    process = subprocess.Popen([sys.executable, "-m", "stablekit", "image", "cat", "--model", "tiny-sd", "-n", "200",
                                "--seed", "1", "-d", str(tmp_path / "out")], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=dict(os.environ))
    assert process.stdout.readline(), process.communicate(timeout=300)
    deadline = time.monotonic() + 60
    while not re.search(r"job 1: image tiny-sd for pid (\d+)", server.text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    copy = int(re.search(r"job 1: image tiny-sd for pid (\d+)", server.text()).group(1))
    assert copy != process.pid
    os.kill(copy, signal.SIGKILL)
    process.communicate(timeout=300)
    assert process.returncode == -signal.SIGKILL, "killed, as the copy was"
    deadline = time.monotonic() + 120
    while "job 1: cancelled" not in server.text() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "job 1: cancelled" in server.text() and f"client {copy} (image): signal 9" in server.text()


def test_malformed_calls_are_refused_and_the_warm_client_keeps_serving(server):
    import socket

    path = str(launch.socket_path())
    whole = json.dumps({**launch.identity(), "argv": ["ps"]}).encode() + b"\n"  # no folder, environment or streams
    streams = (b"F", [0, 1, 2])
    for messages in ([b"not json\n"], [streams, b"{broken\n"], [json.dumps({"argv": ["ps"]}).encode() + b"\n"],
                     [whole], [whole, (b"F", [0])], [b"half a call"]):  # each then hangs up
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(10)
            sock.connect(path)
            for message in messages:
                if isinstance(message, tuple):
                    socket.send_fds(sock, [message[0]], message[1])
                else:
                    sock.sendall(message)
            sock.shutdown(socket.SHUT_WR)
            answer = sock.recv(4096)
            assert b"pid" not in answer, answer
    result = run_process("ps", "--json")
    assert result.returncode == 0 and json.loads(result.stdout)["running"]
    assert [command for _, command, _ in copies(server)] == ["ps"], server.text()


def test_a_stopped_warm_client_delays_a_call_boundedly_and_never_runs_it_twice(server, tmp_path):
    pid = server.status()["warm_client_pid"]
    os.kill(pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        result = run_process("image", "a cat", "--model", "tiny-sd", "--seed", "1", "-d", str(tmp_path / "out"),
                             timeout=120)
        waited = time.monotonic() - started
    finally:
        os.kill(pid, signal.SIGCONT)
    assert result.returncode == 0 and Path(result.stdout.strip()).is_file(), result.stderr
    assert waited < 60 and server.status()["jobs_served"] == 1
    time.sleep(1)  # the warm client reads the abandoned call now: it must not run it
    assert copies(server) == [] and server.status()["jobs_served"] == 1, server.text()
    assert run_process("ps").returncode == 0 and [c for _, c, _ in copies(server)] == ["ps"]


def test_server_and_warm_client_both_killed_leave_nothing_that_stops_the_next_call(server, tmp_path):
    warm_pid = server.status()["warm_client_pid"]
    for pid in (warm_pid, server.pid):
        os.kill(pid, signal.SIGKILL)
    server.process.wait(60)
    assert gone(warm_pid)
    assert launch.socket_path().exists(), "a stale socket, as a kill leaves"
    after = run_process("image", "a dog", "--model", "tiny-sd", "--seed", "2", "-d", str(tmp_path / "after"))
    assert after.returncode == 0 and Path(after.stdout.strip()).is_file(), after.stderr
    assert f"removed a stale server socket (server pid {server.pid} is gone); running here" in after.stderr
    assert not launch.socket_path().exists()


def test_another_interpreter_setup_is_not_started_warm(server, tmp_path):
    """A caller whose stablekit could differ (PYTHONPATH) or that asked its interpreter for something (-X) runs as
    before: still served by the server, started the usual way."""
    warm(server)
    for prefix, env in (([], {"PYTHONPATH": str(tmp_path)}), (["-X", "importtime"], {})):
        result = subprocess.run([sys.executable, *prefix, "-m", "stablekit", "ps", "--json"], capture_output=True,
                                text=True, env={**os.environ, **env}, timeout=300)
        assert result.returncode == 0 and json.loads(result.stdout)["running"], result.stderr
    assert copies(server) == []
    assert run_process("ps").returncode == 0 and [c for _, c, _ in copies(server)] == ["ps"]


def test_the_warm_client_is_private_imports_no_ml_library_and_ends_with_the_server(stablekit_home, tmp_path):
    served = start(stablekit_home, tmp_path / "server.log", "--keep-alive", "0")
    try:
        pid = warm(served)
        assert pid and pid != served.pid
        path = launch.socket_path()
        assert path.stat().st_mode & 0o777 == 0o600 and path.parent.stat().st_mode & 0o777 == 0o700
        assert run_process("image", "a cat", "--model", "tiny-sd", "-d", str(tmp_path / "out")).returncode == 0
        maps = Path(f"/proc/{pid}/maps")
        if maps.exists():
            libraries = maps.read_text()
            assert "libtorch" not in libraries and "site-packages/torch" not in libraries
        os.kill(served.pid, signal.SIGKILL)  # the warm client finds the server gone and ends
        assert gone(pid) and not path.exists()
    finally:
        stop(served)
    again = start(stablekit_home, tmp_path / "again.log", "--keep-alive", "0")
    try:
        pid = warm(again)
        assert run_process("stop").returncode == 0
        assert again.process.wait(60) == 0 and gone(pid) and not launch.socket_path().exists()
        assert "warm client stopped (told to stop)" in again.text()
    finally:
        stop(again)


def test_a_warm_client_that_cannot_listen_leaves_the_server_serving(stablekit_home, tmp_path):
    blocked = launch.socket_path()
    blocked.mkdir(parents=True)  # something that is not a socket where its socket goes
    (blocked / "keep").write_text("not ours to delete")
    served = start(stablekit_home, tmp_path / "server.log", "--keep-alive", "0")
    try:
        deadline = time.monotonic() + 60
        while "cannot listen" not in served.text() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert f"warm client: cannot listen on {blocked}" in served.text(), served.text()
        result = run_process("image", "a cat", "--model", "tiny-sd", "--seed", "1", "-d", str(tmp_path / "out"))
        assert result.returncode == 0 and Path(result.stdout.strip()).is_file(), result.stderr
        assert served.status()["jobs_served"] == 1 and copies(served) == []
        time.sleep(1.5)  # a tick of the server's loop: it does not start the warm client again
        assert "starting another" not in served.text() and (blocked / "keep").read_text() == "not ours to delete"
    finally:
        stop(served)


@pytest.mark.parametrize(("argv", "expected"), [
    (["image", "a cat"], True), (["-q", "text", "hi"], True), (["batch", "jobs.jsonl"], True), (["ps"], True),
    (["image", "a cat", "--no-server"], False), (["serve"], False), (["chat"], False), (["models", "list"], False),
    (["--help"], False), ([], False)])
def test_which_calls_start_warm(argv, expected, monkeypatch):
    monkeypatch.delenv("STABLEKIT_SERVER", raising=False)
    assert launch.eligible(argv) is expected
    monkeypatch.setenv("STABLEKIT_SERVER", "0")
    assert launch.eligible(argv) is False
