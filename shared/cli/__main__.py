"""`python -m shared.cli`: the `wharf` command without the console script."""

import sys

from shared.cli import main

sys.exit(main())
