"""Metrics: streaming mean IoU (an `evaluate.Metric`) and the confusion matrices behind it."""

from .confusion import MetricError, confusion_matrix, metrics_from_confusion, per_sample_confusion
from .mean_iou import MeanIoU, per_class_table

__all__ = [
    "MeanIoU",
    "MetricError",
    "confusion_matrix",
    "metrics_from_confusion",
    "per_class_table",
    "per_sample_confusion",
]
