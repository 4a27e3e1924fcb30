"""Evaluate any segmentation checkpoint on a recipe's evaluation split, at native label resolution.

python -m segtune.evaluate --model outputs/cityscapes --recipe cityscapes.yaml
python -m segtune.evaluate --model nvidia/segformer-b0-finetuned-ade-512-512 --recipe ade20k.yaml --set eval.tta=true
accelerate launch -m segtune.evaluate --model ... --recipe ...     # spread over GPUs
"""

from __future__ import annotations

import argparse
import sys

from . import cli
from .recipe import load_recipe


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = cli.ArgumentParser("segtune.evaluate", "Evaluate a checkpoint on a recipe's evaluation split.")
    parser.add_argument("--model", required=True, help="checkpoint directory or Hub id (segtune or transformers)")
    parser.add_argument("--recipe", required=True, help="shipped recipe name or path: data and eval settings")
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="dotted recipe overrides")
    parser.add_argument("--json", help="also write the results to this file")
    return parser.parse_args(argv)


def evaluate(args: argparse.Namespace) -> None:
    recipe = load_recipe(args.recipe, args.set)
    from .evaluation import evaluate_checkpoint
    from .metrics import per_class_table
    from .run_dir import write_json

    results, id2label = evaluate_checkpoint(args.model, recipe)
    print(per_class_table(results, id2label))
    if args.json:
        write_json(args.json, results)
    print(f"mIoU {float(results['mean_iou']):.4f} ({args.model} on {recipe.name}, {recipe.eval.mode} inference)")


def main(argv: list[str] | None = None) -> int:
    """Print the per-class table and the mIoU; 0 on success, 1 on a user error."""
    return cli.main(parse_args(argv), evaluate)


if __name__ == "__main__":
    sys.exit(main())
