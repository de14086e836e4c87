"""`python -m astctc.cli <command>` (as torchrun -m astctc.cli runs it)."""

import sys

from . import main

sys.exit(main())
