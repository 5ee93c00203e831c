"""The JSON sidecar beside every output: full provenance, whatever the format can embed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..outputs import write_atomic


def sidecar_path(output: Path) -> Path:
    return output.with_name(output.name + ".json")


def write_sidecar(output: Path, record: dict[str, Any]) -> Path:
    """Write `<output>.json`; it belongs to the output just written, so it replaces any stale one."""
    text = json.dumps(record, indent=2, sort_keys=True, default=str) + "\n"
    return write_atomic(sidecar_path(output), lambda tmp: tmp.write_text(text, encoding="utf-8"), overwrite=True)
