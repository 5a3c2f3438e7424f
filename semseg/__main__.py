"""``python -m semseg`` (and ``torchrun -m semseg train ...``) runs the CLI."""

import sys

from semseg.cli import main

sys.exit(main())
