"""`data check`: validate a dataset before training (class table, the diagnosis, every problem listed).

    segtune data check --recipe folder.yaml --set data.path=data/mine

The check reads every mask of the recipe's train and eval splits (`segtune.data.check_dataset`) and diagnoses
them as `data.check: full` does before training.
"""

from __future__ import annotations

import argparse
import sys

from . import cli

_CHECK = """\
Read every image and mask of a recipe's train and eval splits once. Print the pixels, their share
and the images of each class per split, the warnings (a class never in training or never evaluated,
a split mostly ignored), then every problem found: unpaired files, lossy or unreadable masks, size
mismatches, colour masks, 0/255 binary or scaled masks (with the recipe line that fixes them),
values without a class. Exit status 1 when there is a problem.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(title="actions", dest="action", metavar="ACTION", required=True)
    check = actions.add_parser("check", help="validate a dataset: class histogram and problems", description=_CHECK)
    check.add_argument("--recipe", help="shipped recipe name or path: its data settings (default: the recipe defaults)")
    cli.add_recipe_overrides(check)
    check.add_argument(
        "--decode_images",
        action="store_true",
        help="decode every image fully, not just its header (default: header only)",
    )


def run(args: argparse.Namespace) -> int:
    """`data check` (the one action): print the report; 1 when problems were found."""
    from ..data.check import check_dataset
    from ..recipe import load_recipe

    recipe = load_recipe(args.recipe, args.set)
    report = check_dataset(recipe, args.decode_images, progress=lambda line: print(line, file=sys.stderr))
    print(report.format())
    return 0 if report.ok else 1
