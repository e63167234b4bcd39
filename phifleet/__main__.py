"""`python -m phifleet`: the same command line as the `phifleet` console script."""

import sys

from phifleet.cluster.cli import main

if __name__ == "__main__":
    sys.exit(main())
