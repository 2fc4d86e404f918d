"""`python workflows/predict.py ...` is `mai-aug predict ...`; see `--help`."""

import sys

from mai_aug.cli import main

if __name__ == "__main__":
    sys.exit(main(["predict", *sys.argv[1:]]))
