"""`python workflows/export_bundle.py ...` is `mai-aug export-bundle ...`; see `--help`."""

import sys

from mai_aug.cli import main

if __name__ == "__main__":
    sys.exit(main(["export-bundle", *sys.argv[1:]]))
