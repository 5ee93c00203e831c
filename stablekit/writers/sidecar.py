"""The JSON sidecar beside every output: full provenance, whatever the format can embed; strict JSON."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from ..errors import OutputError
from ..outputs import write_atomic


def sidecar_path(output: Path) -> Path:
    return output.with_name(output.name + ".json")


def sidecar_text(record: dict[str, Any]) -> str:
    """The record as strict JSON (no NaN or Infinity, which other JSON readers refuse)."""
    try:
        return json.dumps(record, indent=2, sort_keys=True, default=str, allow_nan=False) + "\n"
    except ValueError:
        found = ", ".join(_non_finite(record)) or "a value"
        raise OutputError(f"cannot write the sidecar: {found} is not a finite number (NaN or infinity)",
                          hint="this is a bug in stablekit: please report it with the command line") from None


def _non_finite(value: Any, where: str = "") -> list[str]:
    if isinstance(value, float) and not math.isfinite(value):
        return [where or "the record"]
    if isinstance(value, dict):
        return [found for key, item in value.items() for found in _non_finite(item, f"{where}.{key}".lstrip("."))]
    if isinstance(value, (list, tuple)):
        return [found for i, item in enumerate(value) for found in _non_finite(item, f"{where}[{i}]")]
    return []


def write_sidecar(output: Path, record: dict[str, Any]) -> Path:
    """Write `<output>.json`; it belongs to the output just written, so it replaces any stale one."""
    text = sidecar_text(record)
    return write_atomic(sidecar_path(output), lambda tmp: tmp.write_text(text, encoding="utf-8"), overwrite=True)
