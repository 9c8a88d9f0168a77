"""`python -m zdtmpy ...` is the `zdtmpy` command."""

from .cli import run

run()
