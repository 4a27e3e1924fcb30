"""Evaluate a checkpoint on a recipe's evaluation split, scored at native label resolution.

    segtune evaluate --model outputs/cityscapes --recipe cityscapes.yaml
    segtune evaluate --model nvidia/segformer-b0-finetuned-ade-512-512 --recipe ade20k.yaml --set eval.tta=true
    accelerate launch -m segtune evaluate --model ... --recipe ...     # spread over GPUs

Prints the per-class table, then an `mIoU ...` line.
"""

from __future__ import annotations

import argparse

from ..recipe import load_recipe
from . import cli


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="checkpoint directory or Hub id (segtune or transformers)")
    parser.add_argument("--recipe", required=True, help="shipped recipe name or path: its data and eval settings")
    cli.add_recipe_overrides(parser)
    parser.add_argument("--json", help="also write the results to this file (default: print them only)")


def run(args: argparse.Namespace) -> None:
    recipe = load_recipe(args.recipe, args.set)
    cli.quiet_transformers()
    from ..evaluation import evaluate_checkpoint
    from ..metrics import per_class_table
    from ..run_dir import write_json

    results, id2label = evaluate_checkpoint(args.model, recipe)
    print(per_class_table(results, id2label))
    if args.json:
        write_json(args.json, results)
    print(f"mIoU {float(results['mean_iou']):.4f} ({args.model} on {recipe.name}, {recipe.eval.mode} inference)")
