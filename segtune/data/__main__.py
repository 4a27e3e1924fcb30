"""`python -m segtune.data check --recipe X [--set KEY=VALUE ...]`: validate a dataset (see check.py)."""

import sys

from .check import main

sys.exit(main())
