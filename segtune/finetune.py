"""`segtune train`, under the names it is documented by: a file to launch, and a module.

    accelerate launch segtune/finetune.py --recipe cityscapes.yaml --set model.variant=mit-b2
    python -m segtune.finetune --recipe demo.yaml

Run as a file, Python puts segtune/ first on sys.path. No module directly in segtune/ is named like a
library (tests/test_commands.py), so nothing there shadows one, and `segtune` is the installed package.
"""

import sys

from segtune.commands import alias

main = alias("train", "python -m segtune.finetune")

if __name__ == "__main__":
    sys.exit(main())
