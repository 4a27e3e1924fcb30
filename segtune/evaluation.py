"""Evaluation at native label resolution, shared by the training loop and `segtune evaluate`.

Each sample is predicted (whole, sliding window or TTA, per `recipe.eval`), its class scores resized to
the label's native size before the argmax, and scored into a per-sample confusion matrix;
`accelerator.gather_for_metrics` collects those from all processes and drops the samples Accelerate
repeated to even out the last batch, so every pixel is counted exactly once.
"""

from __future__ import annotations

import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader

from .compat import reset_accelerate_state
from .data import LabelSpec, build_datasets, make_loader
from .data.carry import raise_carried_error
from .inference import predict_labels
from .metrics import MeanIoU
from .models.loading import load_for_inference
from .models.mix_transformer import CheckpointError
from .recipe import EvalConfig, Recipe


@torch.inference_mode()
def evaluate(
    model: torch.nn.Module, loader: DataLoader, accelerator: Accelerator, labels: LabelSpec, config: EvalConfig
) -> dict:
    """mIoU and friends (evaluate's `mean_iou` keys, plus `confusion_matrix`) over the whole evaluation split.

    Raises:
        DatasetError: a sample could not be read (the message names its file).
    """
    was_training = model.training
    model.eval()
    metric = MeanIoU(num_labels=labels.num_labels, ignore_index=labels.ignore_index)
    for batch in loader:
        raise_carried_error(batch)
        predictions = [
            predict_labels(model, pixel_values.unsqueeze(0), config, tuple(label.shape[-2:]))[0]
            for pixel_values, label in zip(batch["pixel_values"], batch["labels"])
        ]
        matrices = metric.per_sample_confusion(predictions, list(batch["labels"])).to(accelerator.device)
        metric.add_confusion(accelerator.gather_for_metrics(matrices))
    model.train(was_training)
    results = metric.compute()
    # The counts behind the scores (rows: label, columns: prediction), e.g. to compare runs pixel for pixel.
    results["confusion_matrix"] = metric.confusion.cpu().numpy()
    return results


def evaluate_checkpoint(
    model_id: str, recipe: Recipe, model: torch.nn.Module | None = None
) -> tuple[dict, dict[int, str]]:
    """mIoU, mAcc, aAcc and per-class scores (evaluate's `mean_iou` keys) of `model_id` on the recipe's eval
    split, and the class names.

    `model`, if given, is evaluated instead of loading `model_id` (which then only names it): e.g. an exported
    model run by ONNX Runtime (segtune/export/runtime.py), scored by this same code.

    Raises:
        CheckpointError: the checkpoint cannot be loaded or predicts another number of classes.
        DatasetError: the evaluation data is missing or invalid.
    """
    reset_accelerate_state()  # a notebook may have trained with another precision in this process
    accelerator = Accelerator(mixed_precision=recipe.train.mixed_precision)
    with accelerator.main_process_first():
        data = build_datasets(recipe, accelerator.print)
    if model is None:
        model, _ = load_for_inference(model_id)
    if model.config.num_labels != data.labels.num_labels:
        raise CheckpointError(
            f"{model_id} predicts {model.config.num_labels} classes; the recipe's data has {data.labels.num_labels} "
            f"({recipe.data.source} {recipe.data.path or ''}): check data.reduce_labels and data.num_labels"
        )
    loader = make_loader(data.eval, recipe.eval.batch_size, recipe.data.num_workers)
    model, loader = accelerator.prepare(model, loader)
    if recipe.eval.compile is True:  # auto: one pass over the split does not pay for compiling
        model = torch.compile(model, dynamic=True)
    return evaluate(model, loader, accelerator, data.labels, recipe.eval), data.labels.id2label
