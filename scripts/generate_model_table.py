"""Regenerate the model table in README.md from the catalog; `--check` exits 1 when it is stale."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
START, END = "<!-- model-table:start -->", "<!-- model-table:end -->"


def render() -> str:
    sys.path.insert(0, str(ROOT))
    from stablekit.registry import load_registry

    rows = ["| id | modality | tasks | source | params | fp16 weights | gated | licence |",
            "|---|---|---|---|---:|---:|:-:|---|"]
    for spec in load_registry(user_catalog=ROOT / "no-user-catalog.toml"):
        params = spec.memory.total_params
        weights = params * 2e6 / 1024**3
        source = f"`{spec.repo}`" if spec.repo else "built locally"
        rows.append(f"| `{spec.id}` | {spec.modality} | {', '.join(spec.tasks)} | {source} | "
                    f"{params / 1000:.2f} B | {weights:.1f} GiB | {'yes' if spec.gated else ''} | {spec.license} |")
    return "\n".join([START, *rows, END])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    text = README.read_text()
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    updated = head + render() + tail
    if args.check:
        if updated != text:
            print("README.md model table is stale; run python scripts/generate_model_table.py", file=sys.stderr)
            return 1
        return 0
    README.write_text(updated)
    return 0


if __name__ == "__main__":
    sys.exit(main())
