"""`python workflows/regimes.py ...` is `mai-aug regimes ...`; see `--help`."""

import sys

from mai_aug.cli import main

if __name__ == "__main__":
    sys.exit(main(["regimes", *sys.argv[1:]]))
