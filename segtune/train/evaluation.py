"""Periodic and final evaluation: native-resolution scoring, confusion matrices gathered across processes."""

from __future__ import annotations

import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader

from ..data import LabelSpec
from ..inference import InferenceConfig, predict_labels
from ..metrics import MeanIoU


@torch.inference_mode()
def evaluate(
    model: torch.nn.Module, loader: DataLoader, accelerator: Accelerator, labels: LabelSpec, inference: InferenceConfig
) -> dict:
    """mIoU and friends (evaluate's `mean_iou` keys, plus `confusion_matrix`) over the whole evaluation split.

    Each sample is predicted (whole, sliding window or TTA), its scores resized to the label's native
    size, and scored into a per-sample confusion matrix. `gather_for_metrics` collects those from all
    processes and drops the samples Accelerate repeated to even out the last batch.
    """
    was_training = model.training
    model.eval()
    metric = MeanIoU(num_labels=labels.num_labels, ignore_index=labels.ignore_index)
    for batch in loader:
        predictions = [
            predict_labels(model, pixel_values.unsqueeze(0), inference, tuple(label.shape[-2:]))[0]
            for pixel_values, label in zip(batch["pixel_values"], batch["labels"])
        ]
        matrices = metric.per_sample_confusion(predictions, list(batch["labels"])).to(accelerator.device)
        metric.add_confusion(accelerator.gather_for_metrics(matrices))
    model.train(was_training)
    results = metric.compute()
    # The counts behind the scores (rows: label, columns: prediction), e.g. to compare runs pixel for pixel.
    results["confusion_matrix"] = metric.confusion.cpu().numpy()
    return results
