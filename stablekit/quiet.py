"""Library noise kept off the terminal, in one place: stablekit reports progress and problems itself."""

from __future__ import annotations

import contextlib
import logging
import sys
import warnings
from collections.abc import Iterator

# (message pattern, category, module pattern) of notices the libraries print that say nothing to a user.
_IGNORED: tuple[tuple[str, type[Warning], str], ...] = (
    ("", Warning, r"torchsde(\..*)?"),  # Brownian-interval tolerance notices (Stable Audio's sampler)
    (r".*weight_norm.*", FutureWarning, ""),  # the Oobleck VAE's deprecated weight_norm
    (r".*__array__.*copy", DeprecationWarning, ""),  # numpy's notice from the image processors
    ("", FutureWarning, r"(diffusers|transformers|accelerate|torch|peft)(\..*)?"),
    ("", DeprecationWarning, r"(diffusers|transformers|accelerate|numpy|peft)(\..*)?"),
    ("", UserWarning, r"(transformers|accelerate|peft)(\..*)?"),
)
_LOGGERS = ("diffusers", "transformers", "accelerate", "peft", "huggingface_hub")


def silence_loaded() -> None:
    """Verbosity and progress bars of the libraries already imported (never imports one itself)."""
    for name in ("transformers", "diffusers"):
        module = sys.modules.get(name)
        if module is not None:
            module.utils.logging.set_verbosity_error()
            module.utils.logging.disable_progress_bar()
    for name in _LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


def import_quietly(*names: str) -> None:
    """Import the named libraries with their notices off (transformers first: diffusers' import logs through it)."""
    import importlib

    for name in names:
        importlib.import_module(name)
        silence_loaded()


@contextlib.contextmanager
def errors_unlogged(*names: str) -> Iterator[None]:
    """The named libraries' loggers off for a call whose failure stablekit reports itself: diffusers logs an
    error ("An error occurred while trying to fetch ...") just before raising it, which printed the same message
    twice above the one-line error."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


@contextlib.contextmanager
def quiet_libraries() -> Iterator[None]:
    """Run a job with the libraries' warnings and notices off; progress and errors are stablekit's own."""
    with warnings.catch_warnings():
        for message, category, module in _IGNORED:
            warnings.filterwarnings("ignore", message=message, category=category, module=module)
        silence_loaded()
        yield
