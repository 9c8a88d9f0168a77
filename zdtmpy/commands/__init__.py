"""Subcommands of the `zdtmpy` CLI, one module each (see zdtmpy/cli.py)."""
