"""`stablekit serve` end to end with tiny models: a real server process per test (in that test's own
STABLEKIT_HOME, so no other test can reach it), always stopped by the fixture; clients in-process (run_cli) or
as real processes where exit codes, signals and imports are the point."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import run_cli, run_process

QUIET_HEARTBEAT = {"STABLEKIT_PROGRESS_SECONDS": "100000"}  # no timing-dependent lines on stderr


class Served:
    """A `stablekit serve` process and its log."""

    def __init__(self, process: subprocess.Popen, log: Path) -> None:
        self.process, self.log = process, log

    @property
    def pid(self) -> int:
        return self.process.pid

    def status(self) -> dict:
        result = run_cli("ps", "--json")
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    def text(self) -> str:
        return self.log.read_text()


def start(home: Path, log: Path, *args: str, wait: float = 300) -> Served:
    from stablekit import client

    with open(log, "w") as stream:
        process = subprocess.Popen([sys.executable, "-m", "stablekit", "serve", *args], stdout=stream,
                                   stderr=subprocess.STDOUT, env=dict(os.environ), start_new_session=True)
    served = Served(process, log)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        assert process.poll() is None, served.text()
        if client.socket_path().exists() and client.request({"type": "ps"}) is not None:
            return served
        time.sleep(0.1)
    stop(served)
    raise AssertionError(f"the server did not answer:\n{served.text()}")


def stop(served: Served) -> None:
    if served.process.poll() is None:
        served.process.terminate()
        try:
            served.process.wait(60)
        except subprocess.TimeoutExpired:
            served.process.kill()
            served.process.wait(60)


@pytest.fixture
def server(stablekit_home, tmp_path):
    served = start(stablekit_home, tmp_path / "server.log", "--keep-alive", "0")
    try:
        yield served
    finally:
        stop(served)


def outputs(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and not p.name.endswith(".json")}


def sidecars(folder: Path) -> dict[str, dict]:
    found = {}
    for path in sorted(folder.rglob("*.json")):
        data = json.loads(path.read_text())
        found[path.relative_to(folder).as_posix()] = data
    return found


def shape(stderr: str) -> list[str]:
    """stderr with its numbers (memory budget, timing) blanked: the lines and their order are what must match."""
    return [re.sub(r"\d+(\.\d+)?", "N", line) for line in stderr.splitlines()]


@pytest.fixture
def picture(tmp_path) -> Path:
    pixels = np.zeros((60, 80, 4), np.uint8)
    pixels[10:50, 20:60] = [200, 30, 30, 255]
    pixels[20:40, 30:70] = [20, 200, 40, 255]
    path = tmp_path / "chair.png"
    Image.fromarray(pixels).save(path)
    return path


COMMANDS = {
    "image": ["image", "a cat", "--model", "tiny-sd", "--seed", "3", "-n", "2"],
    "video": ["video", "--image", "{picture}", "--model", "tiny-svd", "--frames", "3", "--seed", "5", "-o", "clip.mp4"],
    "audio": ["audio", "a dog barks", "--model", "tiny-audio", "--seconds", "0.37", "--steps", "1", "--seed", "3",
              "-o", "dog.wav"],
    "mesh": ["mesh", "--model", "tiny-triposr", "--image", "{picture}", "-o", "chair.glb"],
    "text": ["text", "Hello there", "--model", "tiny-lm", "--seed", "3", "--max-tokens", "24", "--min-tokens", "24"],
}


@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_served_run_writes_the_same_bytes_and_lines_as_one_here(server, tmp_path, picture, command):
    argv = [arg.replace("{picture}", str(picture)) for arg in COMMANDS[command]]
    here, there = tmp_path / "here", tmp_path / "there"
    here.mkdir()
    there.mkdir()
    local = run_cli(*argv, "--no-server", cwd=here, env=QUIET_HEARTBEAT)
    assert local.returncode == 0, local.stderr
    assert server.status()["jobs_served"] == 0, "--no-server ran it here"
    served = run_cli(*argv, cwd=there, env=QUIET_HEARTBEAT)
    assert served.returncode == 0, served.stderr
    assert server.status()["jobs_served"] == 1, server.text()

    assert served.stdout == local.stdout  # paths (relative, as given) or the streamed text
    assert shape(served.stderr) == shape(local.stderr)
    assert outputs(there) == outputs(here) and (command == "text" or outputs(here))
    for name, sidecar in sidecars(there).items():
        mine = sidecars(here)[name]
        assert sidecar.pop("server")["pid"] == server.pid and "server" not in mine
        for record in (sidecar, mine):
            record.pop("created")
            record["device_plan"].pop("budget_gib")
            record["device_plan"]["reasons"] = shape("\n".join(record["device_plan"]["reasons"]))
        assert sidecar == mine


def test_the_second_call_reuses_the_loaded_model_until_unloaded(server, tmp_path):
    argv = ["image", "a cat", "--model", "tiny-sd", "--seed", "1", "-d", str(tmp_path / "out")]
    first = run_cli(*argv)
    second = run_cli(*argv)
    assert first.returncode == second.returncode == 0, (first.stderr, second.stderr)
    assert "Loading tiny-sd" in first.stderr and "Loading tiny-sd" not in second.stderr
    status = server.status()
    assert status["loads"] == 1 and status["jobs_served"] == 2
    [model] = status["models"]
    assert model["model"] == "tiny-sd" and model["uses"] == 2 and model["device"] == "cpu"
    assert model["idle_seconds"] >= 0 and model["planned_gib"] >= 0

    shown = run_cli("ps")
    assert shown.returncode == 0 and f"server pid {server.pid}" in shown.stdout and "tiny-sd" in shown.stdout

    unloaded = run_cli("unload", "tiny-sd")
    assert unloaded.returncode == 0 and unloaded.stdout.split() == ["tiny-sd"], unloaded.stderr
    assert server.status()["models"] == []
    again = run_cli("unload", "tiny-sd")
    assert again.returncode == 1 and "Error: tiny-sd is not loaded" in again.stderr
    third = run_cli(*argv)
    assert third.returncode == 0 and "Loading tiny-sd" in third.stderr
    assert server.status()["loads"] == 2

    stopped = run_cli("stop")
    assert stopped.returncode == 0 and f"stopped the stablekit server (pid {server.pid})" in stopped.stderr
    assert server.process.wait(60) == 0
    from stablekit import client

    assert not client.socket_path().exists() and not client.pid_path().exists()
    assert run_cli("ps").stderr.startswith("no stablekit server is running")


def test_the_socket_is_private_and_the_client_imports_no_ml_library(server, tmp_path):
    from stablekit import client

    socket_path = client.socket_path()
    assert socket_path.stat().st_mode & 0o777 == 0o600
    assert socket_path.parent.stat().st_mode & 0o777 == 0o700
    script = ("import sys\nfrom stablekit.cli import main\ntry:\n    main(sys.argv[1:])\nfinally:\n"
              "    heavy = [m for m in ('torch', 'diffusers', 'transformers', 'numpy', 'PIL') if m in sys.modules]\n"
              "    print('HEAVY', heavy, file=sys.stderr)\n")
    result = subprocess.run([sys.executable, "-c", script, "image", "a cat", "--model", "tiny-sd", "--seed", "1",
                             "-d", str(tmp_path / "out")], capture_output=True, text=True, env=dict(os.environ),
                            timeout=600)
    assert result.returncode == 0, result.stderr
    assert "HEAVY []" in result.stderr
    assert Path(result.stdout.strip()).is_file() and server.status()["jobs_served"] == 1


def test_errors_keep_their_local_form(server, tmp_path):
    argv = ["image", "a cat", "--model", "tiny-sd", "--image", str(tmp_path / "missing.png")]
    local = run_cli(*argv, "--no-server")
    served = run_cli(*argv)
    assert local.returncode == served.returncode == 2, (local.stderr, served.stderr)
    errors = [line for line in served.stderr.splitlines() if line.startswith(("Error:", "Hint:"))]
    assert errors and errors == [line for line in local.stderr.splitlines() if line.startswith(("Error:", "Hint:"))]
    assert "Traceback" not in served.stderr


def interrupted_client(tmp_path: Path) -> tuple[subprocess.Popen, str, Path]:
    """A real client making 200 images; returns once the first is written."""
    out = tmp_path / "out"
    process = subprocess.Popen([sys.executable, "-m", "stablekit", "image", "cat", "--model", "tiny-sd", "-n", "200",
                                "--seed", "1", "-d", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=dict(os.environ))
    first = process.stdout.readline()
    assert first, process.communicate(timeout=300)[1]
    return process, first, out


def assert_whole_outputs(out: Path, printed: list[str]) -> None:
    pngs = sorted(out.glob("*.png"))
    assert 1 <= len(pngs) < 200 and sorted(map(str, pngs)) == sorted(printed)
    assert not [p for p in out.iterdir() if ".partial" in p.name]
    for png in pngs:
        with Image.open(png) as image:
            image.load()
        assert (out / (png.name + ".json")).is_file()


def test_ctrl_c_in_the_client_cancels_its_job_on_the_server(server, tmp_path):
    process, first, out = interrupted_client(tmp_path)
    process.send_signal(signal.SIGINT)
    rest, err = process.communicate(timeout=300)
    assert process.returncode == 130, err
    assert "Traceback" not in err
    deadline = time.monotonic() + 300
    while server.status()["current_job"] is not None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert server.status()["current_job"] is None, "the server stopped the job"
    assert_whole_outputs(out, [first.strip(), *rest.split()])
    assert re.search(r"job 1: cancelled", server.text()), server.text()
    assert server.process.poll() is None, "the server stays up"


def test_a_server_killed_mid_job_fails_the_client_and_the_next_call_runs_here(server, tmp_path):
    process, first, out = interrupted_client(tmp_path)
    os.kill(server.pid, signal.SIGKILL)
    rest, err = process.communicate(timeout=300)
    server.process.wait(60)
    assert process.returncode == 1, err
    lines = err.strip().splitlines()
    assert lines[-2] == f"Error: the stablekit server (pid {server.pid}) stopped in the middle of the job; " \
                        "nothing half-written was kept", err
    assert lines[-1].startswith("Hint: ") and "Traceback" not in err
    assert_whole_outputs(out, [first.strip(), *rest.split()])

    after = run_cli("image", "a dog", "--model", "tiny-sd", "--seed", "2", "-d", str(tmp_path / "after"))
    assert after.returncode == 0, after.stderr
    assert f"removed a stale server socket (server pid {server.pid} is gone); running here" in after.stderr
    assert "Loading tiny-sd" in after.stderr and Path(after.stdout.strip()).is_file()
    from stablekit import client

    assert not client.socket_path().exists()


def test_jobs_from_several_clients_run_in_arrival_order(server, tmp_path):
    argv = [sys.executable, "-m", "stablekit", "image", "a cat", "--model", "tiny-sd", "-n", "3", "--json"]
    first = subprocess.Popen([*argv, "--seed", "1", "-d", str(tmp_path / "a")], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=dict(os.environ))
    while "job 1:" not in server.text():
        assert first.poll() is None, first.communicate()
        time.sleep(0.1)
    second = subprocess.Popen([*argv, "--seed", "9", "-d", str(tmp_path / "b")], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=dict(os.environ))
    (out_a, err_a), (out_b, err_b) = first.communicate(timeout=600), second.communicate(timeout=600)
    assert first.returncode == second.returncode == 0, (err_a, err_b)
    seeds = [[json.loads(line)["seed"] for line in out.splitlines()] for out in (out_a, out_b)]
    assert seeds == [[1, 2, 3], [9, 10, 11]]
    log = server.text()
    assert log.index("job 1: done") < log.index("job 2: image"), log


def test_keep_alive_releases_the_model_then_the_server_exits(stablekit_home, tmp_path):
    served = start(stablekit_home, tmp_path / "server.log", "--keep-alive", "2s")
    try:
        result = run_cli("image", "a cat", "--model", "tiny-sd", "--seed", "1", "-d", str(tmp_path / "out"))
        assert result.returncode == 0, result.stderr
        assert served.process.wait(300) == 0, served.text()
    finally:
        stop(served)
    log = served.text()
    assert "releasing tiny-sd (idle)" in log and "with nothing loaded" in log, log
    from stablekit import client

    assert not client.socket_path().exists()


def test_detach_writes_pid_and_log_and_stop_ends_it(stablekit_home):
    from stablekit import client

    started = run_process("serve", "--detach", "--keep-alive", "0")
    pid = client.read_pid()
    try:
        assert started.returncode == 0, started.stderr
        assert f"stablekit server started (pid {pid})" in started.stderr
        assert client.log_path().is_file() and "serving on" in client.log_path().read_text()
        status = json.loads(run_cli("ps", "--json").stdout)
        assert status["pid"] == pid and status["log"] == str(client.log_path())
        again = run_process("serve", "--detach")
        assert again.returncode == 1 and f"already running for this STABLEKIT_HOME (pid {pid})" in again.stderr
        stopped = run_cli("stop")
        assert stopped.returncode == 0 and f"stopped the stablekit server (pid {pid})" in stopped.stderr
        assert not client.pid_path().exists()
    finally:
        left = client.read_pid()  # still there: the test failed before `stop` took it down
        if left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(left, signal.SIGKILL)


def test_a_served_batch_gives_the_same_outputs_records_and_lines_and_keeps_models_warm(server, tmp_path, picture):
    """`batch` goes to the server like the one-shot commands: the same files, records, stderr lines and exit
    code as --no-server (a failing job included), and a later batch finds its model loaded."""
    lines = [{"command": "image", "prompt": "a fox", "model": "tiny-sd", "id": "fox", "num_images": 2},
             {"command": "audio", "prompt": "rain", "model": "tiny-audio", "id": "rain", "audio_end_in_s": 0.37},
             {"command": "text", "prompt": "Hello", "model": "tiny-lm", "id": "hello", "max_new_tokens": 6},
             {"command": "mesh", "image": str(tmp_path / "missing.png"), "model": "tiny-triposr", "id": "gone"}]
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text("".join(json.dumps(line) + "\n" for line in lines))
    results = {}
    for name, extra in (("here", ["--no-server"]), ("there", [])):
        folder = tmp_path / name
        folder.mkdir()
        result = run_cli("batch", str(jobs), "-d", ".", "--json", *extra, cwd=folder, env=QUIET_HEARTBEAT)
        assert result.returncode == 1 and "1 of 4 jobs failed: gone" in result.stderr, result.stderr
        results[name] = result
    assert server.status()["jobs_served"] == 1, server.text()

    def records(name: str) -> list[dict]:  # the folder's name and the timings blanked
        found = [json.loads(line.replace(str(tmp_path / name), "FOLDER"))
                 for line in results[name].stdout.splitlines()]
        for record in found:
            record.pop("seconds")
            (record["plan"] or {}).pop("budget_gib", None)
        return found

    assert records("there") == records("here")
    assert shape(results["there"].stderr.replace(str(tmp_path / "there"), "FOLDER")) == \
        shape(results["here"].stderr.replace(str(tmp_path / "here"), "FOLDER"))
    made = {name: outputs(tmp_path / name) for name in results}
    manifests = {name: made[name].pop("stablekit-batch.jsonl").decode().splitlines() for name in results}
    assert made["there"] == made["here"]
    assert [json.loads(line)["status"] for line in manifests["there"]] == ["done", "done", "done", "failed"]
    assert len(list((tmp_path / "there").glob("fox-*.png"))) == 2
    assert sidecars(tmp_path / "there")["fox-0.png.json"]["server"]["pid"] == server.pid

    # A rerun skips what is done; an edited line renders on the model the server still holds.
    lines[0]["seed"] = 11
    jobs.write_text("".join(json.dumps(line) + "\n" for line in lines[:3]))
    again = run_cli("batch", str(jobs), "-d", ".", "--json", cwd=tmp_path / "there")
    assert again.returncode == 0, again.stderr
    assert [json.loads(line)["status"] for line in again.stdout.splitlines()] == ["skipped", "skipped", "done"]
    assert "Loading" not in again.stderr and server.status()["loads"] == 3


def test_ctrl_c_in_a_served_batch_keeps_what_finished_and_a_rerun_resumes(server, tmp_path):
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text("".join(json.dumps({"command": "image", "prompt": f"cat {n}", "model": "tiny-sd", "id": f"c{n}"})
                            + "\n" for n in range(20)))
    out = tmp_path / "out"
    process = subprocess.Popen([sys.executable, "-m", "stablekit", "batch", str(jobs), "-d", str(out)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ))
    first = process.stdout.readline()
    assert first, process.communicate(timeout=300)[1]
    process.send_signal(signal.SIGINT)
    rest, err = process.communicate(timeout=300)
    assert process.returncode == 130 and "Error: interrupted: " in err and "Traceback" not in err, err
    pngs = sorted(out.glob("*.png"))
    assert 1 <= len(pngs) < 20 and not list(out.glob(".*partial*"))
    assert all((out / (png.name + ".json")).is_file() for png in pngs)
    assert server.process.poll() is None, "the server stays up"
    again = run_cli("batch", str(jobs), "-d", str(out), "--json")
    assert again.returncode == 0, again.stderr
    statuses = [json.loads(line)["status"] for line in again.stdout.splitlines()]
    assert statuses.count("skipped") >= len([first, *rest.split()]) and statuses.count("done") >= 1
    assert len(list(out.glob("*.png"))) == 20
