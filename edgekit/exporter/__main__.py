"""`python3 -m edgekit.exporter ARGS...` (also the zipapp's entry point)."""

import sys

from edgekit.exporter.app import main

if __name__ == "__main__":
    sys.exit(main())
