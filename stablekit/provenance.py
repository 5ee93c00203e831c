"""What produced an output: versions and the record every sidecar carries."""

from __future__ import annotations

import platform
import sys
from datetime import datetime, timezone
from functools import lru_cache
from importlib import metadata
from typing import Any

from . import __version__

_PACKAGES = ("torch", "diffusers", "transformers", "accelerate", "huggingface_hub", "safetensors")


def versions() -> dict[str, str]:
    return dict(_versions())


@lru_cache(maxsize=1)
def _versions() -> dict[str, str]:
    """Installed versions: from the module when it is loaded (instant), else package metadata (slow, ~50 ms
    each, but never an import of the library itself)."""
    found = {"stablekit": __version__, "python": platform.python_version()}
    for name in _PACKAGES:
        module = sys.modules.get(name)
        if module is not None and isinstance(getattr(module, "__version__", None), str):
            found[name] = module.__version__
            continue
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def record(*, spec, model_path: str | None, parameters: dict[str, Any], plan, output: str) -> dict[str, Any]:
    """The JSON sidecar's content: enough to reproduce the output on the same machine."""
    from .lockfile import active  # the lockfile a --locked run loaded its models by (lockfile.py)

    lock = {"lockfile": active()} if active() else {}
    return {**lock,
        "output": output,
        "model": {"id": spec.id, "name": spec.name, "repo": spec.repo, "revision": spec.revision,
                  "snapshot": model_path, "variant": spec.variant, "license": spec.license},
        "parameters": parameters,
        "device_plan": plan.to_dict(),
        "versions": versions(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
