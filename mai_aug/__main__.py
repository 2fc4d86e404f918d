import sys

from mai_aug.cli import main

sys.exit(main())
