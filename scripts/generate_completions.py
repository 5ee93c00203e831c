"""Regenerate completions/ from the app itself; `--check` exits 1 when the committed files are stale.

The scripts are typer's shims: at <TAB> they call `stablekit` back, which completes commands, options and
model ids from the registry, so they only change when the program's name or typer's templates change.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

COMPLETIONS = Path(__file__).resolve().parent.parent / "completions"
FILES = {"bash": "stablekit.bash", "zsh": "_stablekit", "fish": "stablekit.fish"}


def render(shell: str) -> str:
    env = dict(os.environ, _TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION="1")  # take the shell we name
    result = subprocess.run([sys.executable, "-m", "stablekit", "--show-completion", shell], env=env,
                            capture_output=True, text=True, check=True)
    return result.stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args()
    stale = []
    for shell, name in FILES.items():
        path, text = COMPLETIONS / name, render(shell)
        if args.check:
            if not path.is_file() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
            print(path)
    if stale:
        print(f"stale completions: {', '.join(stale)}; run python scripts/generate_completions.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
