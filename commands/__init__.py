"""The CLI's subcommands (installed as stablekit.commands): parse options, build a request, call the library."""
