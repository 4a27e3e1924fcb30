"""`recipe show`: print a recipe fully resolved, every key with its value and its default.

    segtune recipe show demo.yaml --set optim.lr=1e-3

These are the keys `--set` takes. A `*` marks a value that differs from the default.
"""

from __future__ import annotations

import argparse
import math

from ..recipe import Recipe, load_recipe
from . import cli

_SHOW = """\
Print every key of a recipe (the keys --set takes): its value once the file and the overrides
are applied, and its default. A * marks a value that differs from the default.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(title="actions", dest="action", metavar="ACTION", required=True)
    show = actions.add_parser(
        "show",
        help="every key of a recipe, with its value and its default",
        description=_SHOW,
    )
    show.add_argument(
        "recipe", nargs="?", help="a shipped recipe name (e.g. demo.yaml) or a path (default: the defaults alone)"
    )
    cli.add_recipe_overrides(show, listed_by="")


def run(args: argparse.Namespace) -> None:
    """`recipe show` (the one action): print the table."""
    print(format_recipe(load_recipe(args.recipe, args.set)))


def format_recipe(recipe: Recipe) -> str:
    """One line per key: `*` where the value differs from the default, the key, the value, the default.

    Values are written as `--set` reads them (YAML flow style), so any line can be pasted back as KEY=VALUE.
    """
    values, defaults = recipe.flat(), load_recipe().flat()  # validated: train.max_steps is the paper's
    rows = [("", "key", "value", "default")]
    rows += [("*" if values[k] != defaults[k] else "", k, _yaml(values[k]), _yaml(defaults[k])) for k in values]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    return "\n".join(
        f"{mark:<{widths[0]}} {key:<{widths[1]}}  {value:<{widths[2]}}  {default}".rstrip()
        for mark, key, value, default in rows
    )


def _yaml(value: object) -> str:
    import yaml

    text = yaml.safe_dump(value, default_flow_style=True, width=math.inf)
    return text.removesuffix("...\n").strip()
