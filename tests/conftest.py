"""Every test runs hermetic: its own STABLEKIT_HOME and HF cache, the hub offline, no token, no colour.

`run_cli` runs the CLI in this interpreter (as `stablekit.cli.main(args)`, with its own stdin, stdout, stderr,
environment and working folder); `run_process` runs it in a fresh one, for what only a real process shows:
exit codes as the OS sees them, signals, start-up imports, the streams of a real pipe.
"""

from __future__ import annotations

import importlib
import io
import logging
import os
import re
import signal
import subprocess
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
# Tiny models are all overhead: one intra-op thread runs them faster than two on a 2-core machine (several
# times faster when the cores are shared), and every run, in-process or in a subprocess, inherits it.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# A suite started in the background of a non-interactive shell (`make test &`) inherits SIGINT ignored, and every
# process it starts would too: the Ctrl-C tests would then interrupt nothing. SIGINT gets its default back.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory) -> Path:
    """Tiny models are built once per session and shared by every test's home (they are read-only), and by the
    session's xdist workers (building one is safe against a race: tests/integration/test_tiny_models.py)."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = tmp_path_factory.getbasetemp().parent / "tiny-models"
        shared.mkdir(exist_ok=True)
        return shared
    return tmp_path_factory.mktemp("tiny-models")


@pytest.fixture(autouse=True)
def stablekit_home(tmp_path, monkeypatch, tiny_cache) -> Path:
    home = tmp_path / "stablekit-home"
    home.mkdir()
    (home / "tiny").symlink_to(tiny_cache, target_is_directory=True)
    monkeypatch.setenv("STABLEKIT_HOME", str(home))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("NO_COLOR", "1")
    for name in ("HF_HUB_CACHE", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "STABLEKIT_DEBUG", "HF_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return home


AMX_CPU = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n"


@pytest.fixture
def bf16_cpu(monkeypatch, tmp_path):
    """This machine's CPU, as probe() reads it, with AVX512_BF16 and AMX (the planner then picks bfloat16)."""
    from stablekit import cpu_features

    path = tmp_path / "cpuinfo"
    path.write_text(AMX_CPU)
    monkeypatch.setattr(cpu_features, "CPUINFO", path)
    monkeypatch.setattr(cpu_features.sys, "platform", "linux")


# What `--help`, completion, `models list` and a served call's client must never import.
HEAVY = ("torch", "diffusers", "transformers", "accelerate", "huggingface_hub", "numpy", "PIL")


def import_trace(*args: str, env: dict | None = None,
                 timeout: float = 300) -> tuple[subprocess.CompletedProcess, set[str]]:
    """A fresh `stablekit ARGS`, and every module it imported (dotted names, from python -X importtime)."""
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "stablekit", *args], capture_output=True,
                            text=True, env={**os.environ, **(env or {})}, timeout=timeout)
    return result, set(re.findall(r"^import time:\s+\d+ \|\s+\d+ \|\s+(\S+)", result.stderr, flags=re.M))


def top_level(modules: set[str]) -> set[str]:
    return {name.split(".")[0] for name in modules}


def run_process(*args: str, env: dict | None = None, input: str | None = None, timeout: float = 600,
                cwd: Path | None = None) -> subprocess.CompletedProcess:
    """The real CLI in a fresh interpreter, as a user's shell would run it."""
    return subprocess.run([sys.executable, "-m", "stablekit", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, input=input, timeout=timeout, cwd=cwd)


class _Stream(io.TextIOBase):
    """sys.stdout / sys.stderr during in-process runs: a pipe, not a terminal, writing to the current run's buffer.

    Libraries that keep the stream they found (logging handlers made during a run) keep this object, so what
    they write later still lands in the run that is current then; between runs it goes to the real stream.
    """

    def __init__(self, fallback: str) -> None:
        self._fallback = fallback
        self.target: io.TextIOWrapper | None = None

    def _current(self):
        return self.target if self.target is not None else getattr(sys, self._fallback)

    @property
    def encoding(self) -> str:
        return "utf-8"

    @property
    def errors(self) -> str:
        return "strict"

    @property
    def buffer(self):
        return self._current().buffer

    def isatty(self) -> bool:
        return False

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        return self._current().write(text)

    def flush(self) -> None:
        self._current().flush()


_STDOUT, _STDERR = _Stream("__stdout__"), _Stream("__stderr__")
# What a fresh interpreter starts with (no -W, no PYTHONWARNINGS): see the warnings module's documentation.
_STARTUP_FILTERS = [("default", DeprecationWarning, "__main__"), ("ignore", DeprecationWarning, ""),
                    ("ignore", PendingDeprecationWarning, ""), ("ignore", ImportWarning, ""),
                    ("ignore", ResourceWarning, "")]


def _buffer() -> io.TextIOWrapper:
    return io.TextIOWrapper(io.BytesIO(), encoding="utf-8", newline="")


def _text(stream: io.TextIOWrapper) -> str:
    """What subprocess.run(text=True) would return: decoded, universal newlines."""
    stream.flush()
    return stream.buffer.getvalue().decode("utf-8", "replace").replace("\r\n", "\n").replace("\r", "\n")


@contextmanager
def _environment(env: dict | None, cwd: Path | None):
    """`env` over os.environ, `cwd` entered, and env's PYTHONPATH on sys.path, for the run only.

    huggingface_hub reads HF_HUB_OFFLINE, HF_ENDPOINT, HF_HOME once, at import, where a fresh process would read
    the run's environment: its constants are read again for the run, then put back as they were (a test may have
    set some).
    """
    saved, saved_cwd = dict(os.environ), os.getcwd()
    os.environ.update(env or {})
    constants = sys.modules.get("huggingface_hub.constants")
    saved_constants = dict(vars(constants)) if constants is not None else None
    if constants is not None:
        importlib.reload(constants)
    extra = [path for path in (env or {}).get("PYTHONPATH", "").split(os.pathsep) if path]
    sys.path[:0] = extra
    importlib.invalidate_caches()
    if cwd is not None:
        os.chdir(cwd)
    try:
        yield
    finally:
        os.chdir(saved_cwd)
        for path in extra:
            sys.path.remove(path)
            sys.path_importer_cache.pop(path, None)
        folders = tuple(os.path.join(os.path.abspath(path), "") for path in extra)
        for name, module in list(sys.modules.items()):  # what came from there is gone, as in the next process
            if folders and (getattr(module, "__file__", None) or "").startswith(folders):
                del sys.modules[name]
        importlib.invalidate_caches()
        if dict(os.environ) != saved:
            os.environ.clear()
            os.environ.update(saved)
        constants = sys.modules.get("huggingface_hub.constants")
        if saved_constants is not None:
            vars(constants).update(saved_constants)
        elif constants is not None:  # first imported during the run: read again from the environment restored
            importlib.reload(constants)


@contextmanager
def _streams(stdin: io.TextIOWrapper, out: io.TextIOWrapper, err: io.TextIOWrapper):
    """sys.stdin/stdout/stderr, logging handlers bound to the real streams, and warnings as a fresh process has them."""
    saved = sys.stdin, sys.stdout, sys.stderr
    moved = []
    handlers = [logging.getLogger()] + [logger for logger in logging.Logger.manager.loggerDict.values()
                                        if isinstance(logger, logging.Logger)]
    for logger in handlers:
        for handler in logger.handlers:
            if type(handler) is logging.StreamHandler:
                if handler.stream in (saved[2], sys.__stderr__):
                    moved.append((handler, handler.setStream(_STDERR)))
                elif handler.stream in (saved[1], sys.__stdout__):
                    moved.append((handler, handler.setStream(_STDOUT)))
    _STDOUT.target, _STDERR.target = out, err
    sys.stdin, sys.stdout, sys.stderr = stdin, _STDOUT, _STDERR
    try:
        with warnings.catch_warnings():
            warnings.resetwarnings()
            for action, category, module in reversed(_STARTUP_FILTERS):
                warnings.filterwarnings(action, category=category, module=module)
            warnings.showwarning = _show_warning
            yield
    finally:
        sys.stdin, sys.stdout, sys.stderr = saved
        _STDOUT.target = _STDERR.target = None
        for handler, stream in moved:
            handler.setStream(stream)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


def run_cli(*args: str, env: dict | None = None, input: str | None = None, timeout: float = 600,
            cwd: Path | None = None) -> subprocess.CompletedProcess:
    """The CLI in this interpreter, seen as a process: exit code, stdout and stderr (piped, so not a terminal).

    `env` is laid over the environment and `cwd` entered for the run only; `input` is stdin (empty when None,
    like /dev/null). An exception main() lets escape goes to sys.excepthook (typer's) and exits 1, as in a process.
    `timeout` is accepted for run_process's signature; an in-process run is not interrupted.
    """
    from stablekit.cli import main

    stdin = _buffer()
    stdin.write(input or "")
    stdin.seek(0)
    out, err = _buffer(), _buffer()
    hook = sys.excepthook  # typer installs its own on each call
    with _environment(env, cwd), _streams(stdin, out, err):
        try:
            main(list(args))
            code = 0
        except SystemExit as exit_:
            if exit_.code is None or isinstance(exit_.code, int):
                code = exit_.code or 0
            else:
                print(exit_.code, file=sys.stderr)
                code = 1
        except Exception:  # noqa: BLE001 - what an interpreter does with an uncaught exception
            sys.excepthook(*sys.exc_info())
            code = 1
        finally:
            sys.excepthook = hook
            sys.stdout.flush()
            sys.stderr.flush()
    return subprocess.CompletedProcess(["stablekit", *args], code, _text(out), _text(err))


@pytest.fixture
def cli():
    return run_cli


# The slowest files (by `python -m pytest --durations=0`) go first, so that the two xdist workers start on them and
# finish together, instead of one running a slow file alone at the end (see addopts in pyproject.toml).
_SLOWEST_FIRST = ("test_serve.py", "test_batch_ray.py", "test_batch_signals.py", "test_tiny_models.py",
                  "test_video_cli.py", "test_image_features.py", "test_process_faults.py", "test_text_cli.py",
                  "test_batch_cli.py", "test_mesh_game_ready.py")


def pytest_collection_modifyitems(items):
    rank = {name: position for position, name in enumerate(_SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
