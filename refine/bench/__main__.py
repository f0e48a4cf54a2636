"""`python -m refine.bench ...` == `refine bench ...`."""

import sys

from refine.cli import main

sys.exit(main(["bench", *sys.argv[1:]]))
