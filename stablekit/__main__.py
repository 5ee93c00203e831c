"""`python -m stablekit` runs the CLI."""

from .cli import main

main()
