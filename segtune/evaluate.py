"""Evaluate any segmentation checkpoint on a recipe's evaluation split, at native label resolution.

python -m segtune.evaluate --model outputs/cityscapes --recipe cityscapes.yaml
python -m segtune.evaluate --model nvidia/segformer-b0-finetuned-ade-512-512 --recipe ade20k.yaml --set eval.tta=true
accelerate launch -m segtune.evaluate --model ... --recipe ...     # spread over GPUs
"""

from __future__ import annotations

import argparse
import json
import sys

from .errors import USER_ERRORS, CheckpointError
from .recipe import Recipe, load_recipe


def evaluate_checkpoint(model_id: str, recipe: Recipe) -> tuple[dict, dict[int, str]]:
    """mIoU, mAcc, aAcc and per-class scores (evaluate's `mean_iou` keys) of `model_id` on the recipe's eval
    split, and the class names.

    Raises:
        CheckpointError: the checkpoint cannot be loaded or predicts another number of classes.
        DatasetError: the evaluation data is missing or invalid.
    """
    from accelerate import Accelerator

    from .data import build_datasets, make_loader
    from .inference import InferenceConfig
    from .models.loading import load_for_inference
    from .train.evaluation import evaluate

    accelerator = Accelerator(mixed_precision=recipe.train.mixed_precision)
    with accelerator.main_process_first():
        data = build_datasets(recipe)
    model, _ = load_for_inference(model_id)
    if model.config.num_labels != data.labels.num_labels:
        raise CheckpointError(
            f"{model_id} predicts {model.config.num_labels} classes; the recipe's data has {data.labels.num_labels} "
            f"({recipe.data.source} {recipe.data.path or ''}): check data.reduce_labels and data.num_labels"
        )
    loader = make_loader(data.eval, recipe.eval.batch_size, recipe.data.num_workers)
    model, loader = accelerator.prepare(model, loader)
    results = evaluate(model, loader, accelerator, data.labels, InferenceConfig.from_eval(recipe.eval))
    return results, data.labels.id2label


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Evaluate a checkpoint on a recipe's evaluation split.")
    parser.add_argument("--model", required=True, help="checkpoint directory or Hub id (segtune or transformers)")
    parser.add_argument("--recipe", required=True, help="shipped recipe name or path: data and eval settings")
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="dotted recipe overrides")
    parser.add_argument("--json", help="also write the results to this file")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        recipe = load_recipe(args.recipe, args.set)
        results, id2label = evaluate_checkpoint(args.model, recipe)
    except USER_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    from .metrics import per_class_table
    from .train.outputs import json_ready

    print(per_class_table(results, id2label))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(json_ready(results), handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
