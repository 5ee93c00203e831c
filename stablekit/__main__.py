"""`python -m stablekit` runs the CLI (starting in a server's warm client when one runs: stablekit.launch)."""

from .launch import main

main()
