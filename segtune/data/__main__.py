"""`python -m segtune.data check ...`: the older name of `segtune data check`."""

import sys

from ..commands import alias

main = alias("data", "python -m segtune.data")

if __name__ == "__main__":
    sys.exit(main())
