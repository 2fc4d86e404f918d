"""`python workflows/preview.py ...` is `mai-aug preview ...`; see `--help`."""

import sys

from mai_aug.cli import main

if __name__ == "__main__":
    sys.exit(main(["preview", *sys.argv[1:]]))
