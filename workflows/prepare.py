"""`python workflows/prepare.py ...` is `mai-aug prepare ...`; see `--help`."""

import sys

from mai_aug.cli import main

if __name__ == "__main__":
    sys.exit(main(["prepare", *sys.argv[1:]]))
