"""Fine-tune a SegFormer from a recipe.

accelerate launch segtune/finetune.py --recipe cityscapes.yaml --set model.variant=mit-b2
python -m segtune.finetune --recipe demo.yaml
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    # Run as a file (`accelerate launch segtune/finetune.py`), Python puts segtune/ first on sys.path,
    # where segtune/evaluate.py would shadow the `evaluate` library: put the project root there instead.
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse  # noqa: E402

from segtune import cli  # noqa: E402
from segtune.recipe import available_recipes, load_recipe  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = cli.ArgumentParser(
        "segtune.finetune",
        "Fine-tune a SegFormer from a recipe.",
        epilog=f"shipped recipes: {', '.join(available_recipes())}",
    )
    parser.add_argument("--recipe", required=True, help="a shipped recipe name (e.g. cityscapes.yaml) or a path")
    parser.add_argument(
        "--set",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="dotted overrides, e.g. train.max_steps=100 optim.lr=1e-4",
    )
    parser.add_argument("--output_dir", help="default: train.output_dir, or outputs/<recipe name>")
    parser.add_argument(
        "--resume",
        nargs="?",
        const="latest",
        metavar="latest|PATH",
        help="continue from the latest checkpoint in the output directory, or from PATH",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace a finished run in the output directory")
    return parser.parse_args(argv)


def finetune(args: argparse.Namespace) -> None:
    recipe = load_recipe(args.recipe, args.set)  # validated before torch is even imported
    if args.output_dir:
        recipe.train.output_dir = args.output_dir
    from segtune.train import train

    train(recipe, resume=args.resume, overwrite=args.overwrite)


def main(argv: list[str] | None = None) -> int:
    """Run the recipe; return the process exit status (0 on success, 1 on a user error)."""
    return cli.main(parse_args(argv), finetune)


if __name__ == "__main__":
    sys.exit(main())
