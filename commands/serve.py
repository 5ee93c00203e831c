"""`stablekit serve`, `ps`, `unload`, `stop`: a local server that keeps models loaded between commands."""

from __future__ import annotations

from typing import Annotated

import typer

from .options import JsonOpt, complete_model

SERVE_EPILOG = """Examples:

  stablekit serve --detach            (in the background; `stablekit ps` shows it, `stablekit stop` ends it)

  stablekit serve --keep-alive 1h     (in this terminal; Ctrl-C stops it)

  stablekit serve --detach --keep-alive 0      (models stay until `stablekit unload` or `stablekit stop`)

While it runs, `stablekit image|video|audio|mesh|text` send their jobs to it (--no-server or STABLEKIT_SERVER=0
runs one here instead). It listens on a socket in STABLEKIT_HOME that only you can open; no network port.
"""


def serve(
    ctx: typer.Context,
    keep_alive: Annotated[str, typer.Option(
        "--keep-alive", metavar="DURATION",
        help="Release a model unused this long, and exit after this long idle with nothing loaded "
             "(10m, 90s, 1h30m; 0 = never).")] = "10m",
    detach: Annotated[bool, typer.Option(
        "--detach", metavar="", help="Run in the background: pid and log in STABLEKIT_HOME/server/.")] = False,
    log_file: Annotated[str | None, typer.Option("--log-file", hidden=True)] = None,
) -> None:
    """Keep models loaded between commands: a local server the generating commands use when it runs."""
    from stablekit import server, server_start

    seconds = server_start.parse_duration(keep_alive)
    console = ctx.obj
    if detach:
        status = server_start.start_detached(seconds)
        console.info(f"stablekit server started (pid {status['pid']}); log: {status['log']}")
        return
    _absolute_homes()
    server.Server(seconds, log_file=log_file).serve()


def _absolute_homes() -> None:
    """The server changes into each client's folder while it runs the client's job: folders given relative to
    where it was started must keep meaning the same place."""
    import os

    for name in ("STABLEKIT_HOME", "HF_HOME", "HF_HUB_CACHE", "XDG_CONFIG_HOME", "XDG_CACHE_HOME"):
        value = os.environ.get(name)
        if value and not os.path.isabs(os.path.expanduser(value)):
            os.environ[name] = os.path.abspath(os.path.expanduser(value))


def ps(ctx: typer.Context, json_output: JsonOpt = False) -> None:
    """Show the server: pid, uptime, and the loaded models with their memory and idle time."""
    from stablekit import client
    from stablekit.server_start import format_duration

    console = ctx.obj
    status = client.request({"type": "ps"}, console)
    if status is None:
        if json_output:
            console.result({"running": False})
        console.info(f"no stablekit server is running for {client.server_dir().parent}")
        return
    status = {"running": True, **{k: v for k, v in status.items() if k != "type"}}
    if json_output:
        console.result(status)
        return
    keep = status["keep_alive_seconds"]
    line = (f"server pid {status['pid']} · up {format_duration(status['uptime_seconds'])} · "
            f"{status['jobs_served']} jobs served · keep-alive {format_duration(keep) if keep else 'forever'}")
    if status.get("current_job"):
        running = status["current_job"]
        line += f" · running {'/'.join(running['commands'])} for pid {running['client_pid']}"
    if status["queued"]:
        line += f" · {status['queued']} queued"
    console.result(line)
    if not status["models"]:
        console.result("no models loaded")
        return
    from rich.table import Table

    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("model", "device", "dtype", "memory", "idle", "uses", "load time"):
        table.add_column(column, justify="right" if column in ("memory", "idle", "uses", "load time") else "left")
    for model in status["models"]:
        measured = model["measured_gib"]
        memory = f"{model['planned_gib']:.2f} GiB" + (f" ({measured:.2f} measured)" if measured is not None else "")
        table.add_row(model["model"], model["device"], model["dtype"], memory, format_duration(model["idle_seconds"]),
                      str(model["uses"]), f"{model['load_seconds']:.1f} s")
    console.table(table)


def unload(
    ctx: typer.Context,
    model: Annotated[str | None, typer.Argument(
        help="Model id or alias to release; all of them when omitted.", autocompletion=complete_model)] = None,
) -> None:
    """Release a loaded model (or all) from the server; it stays up for the next job."""
    from stablekit import client
    from stablekit.errors import StablekitError

    console = ctx.obj
    answer = client.request({"type": "unload", "model": model}, console, timeout=client.READ_TIMEOUT)
    if answer is None:
        raise StablekitError("no stablekit server is running", hint="`stablekit serve --detach` starts one")
    if answer.get("type") == "error" or answer.get("type") == "refused":
        raise StablekitError(answer["message"], answer.get("hint"))
    if model and not answer["models"]:
        raise StablekitError(f"{model} is not loaded", hint="`stablekit ps` lists what is")
    for released in answer["models"]:
        console.result(released)
    if not answer["models"]:
        console.info("nothing was loaded")


def stop(ctx: typer.Context) -> None:
    """Stop the server (a job it is running is cancelled; its finished outputs are kept)."""
    import time

    from stablekit import client
    from stablekit.launch import running

    console = ctx.obj
    answer = client.request({"type": "stop"}, console)
    if answer is None:
        console.info("no stablekit server was running")
        return
    pid = answer.get("pid")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (client.socket_path().exists() or (pid and running(pid))):
        time.sleep(0.05)
    console.info(f"stopped the stablekit server (pid {pid})" if not client.socket_path().exists() else
                 f"asked the stablekit server (pid {pid}) to stop; it is still finishing")
