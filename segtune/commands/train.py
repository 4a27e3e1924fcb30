"""Fine-tune a SegFormer from a recipe.

    segtune train --recipe cityscapes.yaml --set model.variant=mit-b2
    accelerate launch -m segtune train --recipe cityscapes.yaml    # or: accelerate launch segtune/finetune.py ...

Evaluations and checkpoints print one line each above the progress bar; the run ends with the per-class table.
"""

from __future__ import annotations

import argparse

from ..recipe import available_recipes, load_recipe
from . import cli


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = f"shipped recipes: {', '.join(available_recipes())}"
    parser.add_argument("--recipe", required=True, help="a shipped recipe name (e.g. cityscapes.yaml) or a path")
    cli.add_recipe_overrides(parser)
    parser.add_argument(
        "--output_dir",
        help="where the run is written (default: the recipe's train.output_dir, or outputs/<recipe name>)",
    )
    parser.add_argument(
        "--resume",
        nargs="?",
        const="latest",
        metavar="latest|PATH",
        help="continue from the latest checkpoint in the output directory, or from PATH (default: start afresh)",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace a finished run in the output directory (default: refuse)"
    )


def run(args: argparse.Namespace) -> None:
    recipe = load_recipe(args.recipe, args.set)  # validated before torch is even imported
    if args.output_dir:
        recipe.train.output_dir = args.output_dir
    cli.quiet_transformers()
    from ..train import train

    train(recipe, resume=args.resume, overwrite=args.overwrite)
