"""``python -m azrun.sim up ...``: run the local Azure in the foreground."""

from __future__ import annotations

import sys

from azrun.sim.server import main

if __name__ == "__main__":
    sys.exit(main())
