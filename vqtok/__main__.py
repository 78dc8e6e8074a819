"""`python -m vqtok <command> ...`: the `vqtok` command line (see `vqtok.commands`)."""

import sys

from vqtok.commands import main

sys.exit(main())
