"""A run builds only the command it names, and a call that `stablekit serve` runs starts as a thin client: its own
command module, no rich when quiet, no ML library.

The help of each command built alone is compared with its help in the whole app; the served call runs against a
stand-in server on the real socket (it answers the job at once), so only the client's start is measured here."""

from __future__ import annotations

import contextlib
import os
import socket
import threading

import pytest

from conftest import HEAVY, import_trace, run_cli, top_level
from stablekit import cli


def command_modules(modules: set[str]) -> set[str]:
    return {name.rsplit(".", 1)[1] for name in modules if name.startswith("stablekit.commands.")}


@pytest.mark.parametrize(("args", "name"), [
    (["image", "a cat"], "image"), (["-q", "image", "a cat"], "image"), (["--quiet", "-q", "models", "list"], "models"),
    (["ps"], "ps"), (["chat"], "chat"), ([], None), (["--help"], None), (["-q", "--help"], None), (["--version"], None),
    (["imag", "a cat"], None), (["--show-completion", "bash"], None), (["--", "image"], None), (["a cat"], None),
])
def test_the_command_a_run_names(args, name):
    assert cli.invoked_command(args) == name


def test_completion_builds_every_command(monkeypatch):
    monkeypatch.setenv("_STABLEKIT_COMPLETE", "complete_bash")
    assert cli.invoked_command(["image"]) is None


def test_the_table_is_the_app():
    import typer

    group = typer.main.get_command(cli.build_app())
    assert set(group.commands) == set(cli.COMMANDS)
    alone = typer.main.get_command(cli.build_app(only="models"))
    assert list(alone.commands) == ["models"] and list(alone.commands["models"].commands) == \
        list(group.commands["models"].commands)


def all_paths() -> list[tuple[str, ...]]:
    import typer

    def walk(command, path):
        yield path
        for name, sub in getattr(command, "commands", {}).items():
            yield from walk(sub, (*path, name))

    return list(walk(typer.main.get_command(cli.build_app()), ()))


def test_each_command_built_alone_shows_the_help_it_has_in_the_whole_app(monkeypatch):
    paths = all_paths()
    assert len(paths) > 20
    alone = {path: run_cli(*path, "--help") for path in paths}
    monkeypatch.setattr(cli, "invoked_command", lambda args: None)
    for path in paths:
        whole = run_cli(*path, "--help")
        assert whole.returncode == 0 and "--help" in whole.stdout, (path, whole.stderr)
        assert (alone[path].returncode, alone[path].stdout, alone[path].stderr) == \
            (whole.returncode, whole.stdout, whole.stderr), path


def test_a_run_imports_only_its_own_command_module():
    result, modules = import_trace("image", "--help")
    assert result.returncode == 0 and "--dry-run" in result.stdout
    assert command_modules(modules) == {"image", "options"}
    result, modules = import_trace("models", "list", "--json")
    assert result.returncode == 0 and "tiny-sd" in result.stdout
    assert command_modules(modules) <= {"models", "options"} and not modules & set(HEAVY)
    result, modules = import_trace("--help")
    assert result.returncode == 0 and all(f" {name} " in result.stdout for name in cli.COMMANDS)
    assert command_modules(modules) >= {"image", "models", "serve", "text"}


@contextlib.contextmanager
def stand_in_server(records: list[dict]):
    """Listens on this STABLEKIT_HOME's server socket; answers one job with `records` at once."""
    from stablekit import client

    folder = client.server_dir()
    folder.mkdir(parents=True)
    folder.chmod(0o700)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.unix_address(client.socket_path(), listener.bind)
    client.socket_path().chmod(0o600)
    listener.listen()
    received: list[dict] = []

    def serve() -> None:
        connection, _ = listener.accept()
        channel = client.Channel(connection)
        received.append(channel.receive(60))
        for message in [{"type": "queued", "ahead": 0, "pid": os.getpid()}, {"type": "started"},
                        *({"type": "result", "record": record} for record in records),
                        {"type": "done", "exit_code": 0}]:
            channel.send(message)
        channel.receive(60)  # until the client closes
        channel.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield received
    finally:
        listener.close()
        thread.join(60)


def test_a_served_call_starts_as_a_thin_client():
    argv = ["image", "a lighthouse", "--model", "tiny-sd", "--width", "64", "--height", "64", "--steps", "2",
            "--guidance", "0", "--seed", "1", "--device", "cpu", "--dtype", "float32", "--decoder", "tiny", "-q",
            "--overwrite", "-o", "lighthouse.png"]
    with stand_in_server([{"path": "lighthouse.png"}]) as received:
        result, modules = import_trace(*argv)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "lighthouse.png\n"
    [message] = received
    job = message["jobs"][0]["job"]
    assert (job["prompt"], job["model"], job["width"], job["height"], job["num_inference_steps"],
            job["guidance_scale"], job["seed"], job["device"], job["dtype"], job["decoder"], job["output"]) == \
        ("a lighthouse", "tiny-sd", 64, 64, 2, 0.0, 1, "cpu", "float32", "tiny", "lighthouse.png")
    assert message["sink"]["overwrite"] is True
    tops = top_level(modules)
    assert not tops & {*HEAVY, "rich"}, tops & {*HEAVY, "rich"}
    assert command_modules(modules) == {"image", "options"}
    assert not [name for name in modules if name.startswith("stablekit.testing")]  # the catalog's tiny builders
