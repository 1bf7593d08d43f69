"""``python -m benchmarks`` in a checkout, ``python -m levels3.bench`` or ``levels3 bench`` once installed."""

import sys

from .suite import main

sys.exit(main())
