"""`python workflows/calibrate.py ...` is `mai-aug calibrate ...`; see `--help`."""

import sys

from mai_aug.cli import main

if __name__ == "__main__":
    sys.exit(main(["calibrate", *sys.argv[1:]]))
