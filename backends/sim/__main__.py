"""``python -m backends.sim [flags]``: start the simulated engine in the foreground."""

import sys

from backends.sim.server import main

sys.exit(main())
