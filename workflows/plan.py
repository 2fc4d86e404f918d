"""`python workflows/plan.py ...` is `mai-aug plan ...`; see `--help`."""

import sys

from mai_aug.cli import main

if __name__ == "__main__":
    sys.exit(main(["plan", *sys.argv[1:]]))
