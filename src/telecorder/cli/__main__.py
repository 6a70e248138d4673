"""``python -m telecorder.cli``: the ``telecorder`` command (tests and benchmarks run it this way)."""

import sys

from . import main

sys.exit(main())
