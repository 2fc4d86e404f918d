"""`python workflows/compare.py ...` is `mai-aug compare ...`; see `--help`."""

import sys

from mai_aug.cli import main

if __name__ == "__main__":
    sys.exit(main(["compare", *sys.argv[1:]]))
