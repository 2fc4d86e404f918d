"""`python workflows/split.py ...` is `mai-aug split ...`; see `--help`."""

import sys

from mai_aug.cli import main

if __name__ == "__main__":
    sys.exit(main(["split", *sys.argv[1:]]))
