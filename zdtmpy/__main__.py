"""`python -m zdtmpy ...` is the `zdtmpy` command."""

import sys

from .cli import main

sys.exit(main())
