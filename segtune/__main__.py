"""`python -m segtune COMMAND ...`, and `accelerate launch -m segtune COMMAND ...`: the `segtune` console script."""

import sys

from .commands import main

if __name__ == "__main__":
    sys.exit(main(prog="python -m segtune"))
