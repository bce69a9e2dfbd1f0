"""Subcommands of the ``terrafm`` CLI (argument parsing only; the work is in the library)."""
