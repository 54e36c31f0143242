"""`python -m bench`: see `python -m bench --help`."""

import os
import sys

# PyTorch's OpenMP threads spin after each op by default; interleaved with XLA's
# threads on a few cores that spinning steals the CPU from whichever runs next.
# Passive waiting keeps the side-by-side comparison fair (recorded in the JSON).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .cli import main  # noqa: E402

sys.exit(main())
