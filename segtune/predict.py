"""`python -m segtune.predict`: the older name of `segtune predict`."""

import sys

from .commands import alias

main = alias("predict", "python -m segtune.predict")

if __name__ == "__main__":
    sys.exit(main())
