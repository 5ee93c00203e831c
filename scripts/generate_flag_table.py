"""Regenerate docs/flags.md, the table of shared flags and the commands that take them; `--check` exits 1 when
it is stale."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TABLE = ROOT / "docs" / "flags.md"
COMMANDS = ("image", "video", "audio", "mesh", "text", "chat", "batch")


def _options() -> dict[str, dict[str, str]]:
    """command -> {long flag (with its short form): help} from the app itself."""
    sys.path.insert(0, str(ROOT))
    import typer

    from stablekit.cli import build_app

    group = typer.main.get_command(build_app())
    found: dict[str, dict[str, str]] = {}
    for name in COMMANDS:
        command = group.commands.get(name)
        if command is None:
            continue
        flags = {}
        for param in command.params:
            longs = [o for o in param.opts if o.startswith("--")]
            if not longs or longs[0] == "--help":
                continue
            shorts = [o for o in param.opts if not o.startswith("--")]
            label = ", ".join([f"`{o}`" for o in shorts + longs + list(param.secondary_opts)])
            flags[label] = (param.help or "").split(".")[0]
        found[name] = flags
    return found


def render() -> str:
    options = _options()
    commands = [c for c in COMMANDS if c in options]
    counts: dict[str, int] = {}
    for flags in options.values():
        for label in flags:
            counts[label] = counts.get(label, 0) + 1
    shared = sorted((label for label, n in counts.items() if n >= 2), key=lambda label: (-counts[label], label))
    rows = ["# Shared flags", "",
            "The same idea has the same flag in every command. Generated from the app by",
            "`python scripts/generate_flag_table.py`; a test fails when it is stale.", "",
            "| flag | " + " | ".join(commands) + " |", "|---|" + "|".join(":-:" for _ in commands) + "|"]
    for label in shared:
        marks = ["✓" if label in options[c] else "" for c in commands]
        rows.append(f"| {label} | " + " | ".join(marks) + " |")
    return "\n".join(rows) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    text = render()
    if args.check:
        if not TABLE.is_file() or TABLE.read_text(encoding="utf-8") != text:
            print("docs/flags.md is stale; run python scripts/generate_flag_table.py", file=sys.stderr)
            return 1
        return 0
    TABLE.parent.mkdir(exist_ok=True)
    TABLE.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
