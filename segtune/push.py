"""`python -m segtune.push`: the older name of `segtune push`."""

import sys

from .commands import alias

main = alias("push", "python -m segtune.push")

if __name__ == "__main__":
    sys.exit(main())
