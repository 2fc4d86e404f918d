"""`python workflows/robustness.py ...` is `mai-aug robustness ...`; see `--help`."""

import sys

from mai_aug.cli import main

if __name__ == "__main__":
    sys.exit(main(["robustness", *sys.argv[1:]]))
