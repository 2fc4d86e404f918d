"""`python workflows/saliency.py ...` is `mai-aug saliency ...`; see `--help`."""

import sys

from mai_aug.cli import main

if __name__ == "__main__":
    sys.exit(main(["saliency", *sys.argv[1:]]))
