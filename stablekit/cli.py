"""The table of contents: builds the app from stablekit.commands, and maps errors to exit codes."""

from __future__ import annotations

import contextvars
import os
import sys
import traceback
from typing import Annotated

import typer

from . import __version__
from .console import Console
from .errors import StablekitError

HELP = """Generate images, video, audio, 3D meshes and text with Stability AI's open models.

Results (file paths, or JSON with --json) go to stdout; progress and messages to stderr."""


def _version(value: bool) -> None:
    if value:
        print(f"stablekit {__version__}")
        raise typer.Exit()


def _global_options(
    ctx: typer.Context,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", metavar="",
    help="Only results and errors: no progress.")] = False,
    version: Annotated[bool | None, typer.Option(
        "--version", callback=_version, is_eager=True, metavar="", help="Print the version and exit.")] = None,
) -> None:
    ctx.obj = Console(quiet=quiet)
    ctx.call_on_close(ctx.obj.close)  # a failed run's last stage must not beat on after it (main() may run again)


# Every subcommand: name -> (its module in stablekit.commands, the function or sub-app, the epilog's name), in the
# order they are added (`stablekit --help` lists the commands, then the groups). A run builds only the one it names
# (see invoked_command).
COMMANDS: dict[str, tuple[str, str, str | None]] = {
    "image": ("image", "image", "EPILOG"),
    "audio": ("audio", "audio", "EPILOG"),
    "text": ("text", "text", "TEXT_EPILOG"),
    "chat": ("text", "chat", "CHAT_EPILOG"),
    "mesh": ("mesh", "mesh", "EPILOG"),
    "video": ("video", "video", "EPILOG"),
    "batch": ("batch", "batch", "EPILOG"),
    "models": ("models", "app", None),
    "presets": ("presets", "app", None),
    "doctor": ("doctor", "doctor", None),
    "info": ("info", "info", "EPILOG"),
    "reproduce": ("reproduce", "reproduce", "EPILOG"),
    "lock": ("lock", "lock", "EPILOG"),
    "serve": ("serve", "serve", "SERVE_EPILOG"),
    "ps": ("serve", "ps", None),
    "unload": ("serve", "unload", None),
    "stop": ("serve", "stop", None),
}


def build_app(only: str | None = None) -> typer.Typer:
    """The app with every subcommand, or with `only` that one: a run imports and builds only what it runs."""
    app = typer.Typer(name="stablekit", help=HELP, no_args_is_help=True, pretty_exceptions_show_locals=False,
                      context_settings={"help_option_names": ["-h", "--help"]})
    app.callback()(_global_options)
    for name, (module_name, attribute, epilog) in COMMANDS.items():
        if only not in (None, name):
            continue
        module_path = f"{__package__}.commands.{module_name}"
        __import__(module_path)  # not importlib.import_module, whose imports `python -X importtime` leaves out
        module = sys.modules[module_path]
        if attribute == "app":
            app.add_typer(module.app, name=name)
        else:
            app.command(name, epilog=getattr(module, epilog) if epilog else None)(getattr(module, attribute))
    return app


def invoked_command(args: list[str]) -> str | None:
    """The subcommand a command line runs, when it is the only one to build: the first word, after any -q. None
    (build them all) for `--help`, `--version`, no command, an unknown one, and shell completion."""
    from .launch import command_word

    if os.environ.get("_STABLEKIT_COMPLETE"):  # typer's completion variable: <TAB> may walk the whole tree
        return None
    word = command_word(args)
    return word if word in COMMANDS else None


def parameters(command, parent=None):
    """Every parameter of the command tree, typer's own --help, --install-completion and --show-completion
    included (the help option is made, and kept, here)."""
    ctx = command.context_class(command, parent=parent, **(command.context_settings or {}))
    yield from (param for param in [*command.params, command.get_help_option(ctx)] if param is not None)
    for sub in getattr(command, "commands", {}).values():
        yield from parameters(sub, ctx)


def plain_flags(command):
    """The command tree with no `<bool>` shown in help for flags that take no value (ours say metavar="")."""
    for param in parameters(command):
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
    return command


def _usage_error_exit(err: Exception) -> int | None:
    """Typer's own usage errors (bad option, missing argument) carry an exit code and a message."""
    exit_code = getattr(err, "exit_code", None)
    if isinstance(exit_code, int) and hasattr(err, "format_message"):
        ctx = getattr(err, "ctx", None)
        command = getattr(ctx, "command_path", "stablekit")
        Console().error(err.format_message(), hint=f"see '{command} --help'")
        return exit_code
    return None


def main(argv: list[str] | None = None) -> None:
    """Entry point: exit 0 ok, 1 failure, 2 usage, 130 Ctrl-C, 143 SIGTERM, 141 when stdout's reader went away
    (silently, as a shell expects of a pipe's writer); tracebacks only with STABLEKIT_DEBUG=1."""
    from .process import SIGPIPE_EXIT, SIGTERM_EXIT, StdoutLost, drop_stdout, guarded_stdout, sigterm_as_interrupt

    debug = os.environ.get("STABLEKIT_DEBUG", "") not in ("", "0")
    try:
        with sigterm_as_interrupt() as terminated, guarded_stdout():
            code = _run(argv, debug)
    except StdoutLost as lost:
        drop_stdout(lost)
        if lost.broken_pipe:
            code = SIGPIPE_EXIT
        else:
            from .process import stdout_hint, stdout_message

            Console().error(stdout_message(lost), hint=stdout_hint(lost))
            code = 1
    if terminated.received and code in (1, 130):
        code = SIGTERM_EXIT
    code = code if isinstance(code, int) else 0
    if argv is None:  # a real process (the console script, python -m stablekit), not a caller in Python
        _exit_without_teardown(code)
    sys.exit(code)


# Libraries whose interpreter teardown (freeing every module and tensor) takes seconds at exit; and the client of
# a call that `stablekit serve` ran (stablekit.client_follow is imported once a server takes the job), whose
# teardown of typer & co (~0.05 s) is a fifth of its whole start.
_SLOW_TO_TEAR_DOWN = ("torch", "diffusers", "transformers", f"{__package__}.client_follow")


def _exit_without_teardown(code: int) -> None:
    """Exit as soon as the work is written: the exit handlers run (logging flushed, temporary folders removed),
    then the process ends without the interpreter's teardown of torch & co, which takes ~3 s on a small CPU."""
    if not any(name in sys.modules for name in _SLOW_TO_TEAR_DOWN):
        return
    import atexit
    import threading

    for thread in threading.enumerate():  # what a normal exit waits for first
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def _run(argv: list[str] | None, debug: bool) -> int | None:
    """The app, with the library's errors turned into one `Error:` line (and a `Hint:`) and an exit code."""
    try:
        # One call, one run: context variables set while it runs (--locked) end with it, even where a parse error
        # keeps their reset from running, so a second main() in the same process starts clean.
        args = sys.argv[1:] if argv is None else list(argv)
        command = plain_flags(typer.main.get_command(build_app(only=invoked_command(args))))
        return contextvars.copy_context().run(command.main, args=argv, prog_name="stablekit", standalone_mode=False)
    except StablekitError as err:
        if debug:
            traceback.print_exc()
        Console().error(err.message, err.hint)
        return err.exit_code
    except typer.Abort:
        Console().error("aborted")
        return 1
    except Exception as err:
        code = _usage_error_exit(err)
        if code is None:
            raise
        if debug:
            traceback.print_exc()
        return code
