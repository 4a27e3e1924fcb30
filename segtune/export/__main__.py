"""`python -m segtune.export`: the same as `segtune export`."""

import sys

from ..commands import alias

main = alias("export", "python -m segtune.export")

if __name__ == "__main__":
    sys.exit(main())
