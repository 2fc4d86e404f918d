"""`python workflows/train.py ...` is `mai-aug train ...`; see `--help`."""

import sys

from mai_aug.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
