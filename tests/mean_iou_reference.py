"""Test oracle: the algorithm of evaluate's canonical `mean_iou` metric, restated in plain NumPy.

`evaluate.load("mean_iou")` needs the Hub, so the parity tests and bench/metric_speed.py compare
segtune's MeanIoU with this instead. It follows the metric's documented steps (after mmsegmentation's
`intersect_and_union`), map by map, without any of segtune's code:

1. remap the reference with `label_map` (every lookup uses the original values);
2. with `reduce_labels`, turn 0 into 255, subtract 1, and turn 254 back into 255;
3. keep the pixels whose reference is not `ignore_index`;
4. histogram the hits (prediction == reference), the predictions and the references over
   `num_labels` bins spanning (0, num_labels - 1): values outside that range fall in no bin;
5. sum the histograms over all maps in float64; union = predicted + labelled - hits;
6. IoU = hits / union and accuracy = hits / labelled per class (0 / 0 is NaN), their `np.nanmean`s,
   overall accuracy = total hits / total labelled; optionally replace NaNs with `nan_to_num`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np


def _class_counts(values: np.ndarray, num_labels: int) -> np.ndarray:
    counts, _ = np.histogram(values, bins=num_labels, range=(0, num_labels - 1))
    return counts


def _prepared_reference(reference, label_map: Mapping[int, int] | None, reduce_labels: bool) -> np.ndarray:
    label = np.array(reference)  # a copy: the caller's map is left alone
    if label_map is not None:
        original = label.copy()
        for old, new in label_map.items():
            label[original == old] = new
    if reduce_labels:
        label[label == 0] = 255
        label = label - 1
        label[label == 254] = 255
    return label


def reference_mean_iou(
    predictions: Iterable,
    references: Iterable,
    num_labels: int,
    ignore_index: int | None,
    nan_to_num: float | None = None,
    label_map: Mapping[int, int] | None = None,
    reduce_labels: bool = False,
) -> dict:
    """evaluate's `mean_iou` results (same keys, same float64 arithmetic) for maps of any sizes."""
    hits, labelled, union = (np.zeros(num_labels, dtype=np.float64) for _ in range(3))
    for prediction, reference in zip(predictions, references):
        label = _prepared_reference(reference, label_map, reduce_labels)
        keep = label != ignore_index
        prediction, label = np.asarray(prediction)[keep], label[keep]
        map_hits = _class_counts(prediction[prediction == label], num_labels)
        map_predicted = _class_counts(prediction, num_labels)
        map_labelled = _class_counts(label, num_labels)
        hits += map_hits
        labelled += map_labelled
        union += map_predicted + map_labelled - map_hits
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = hits / union
        accuracy = hits / labelled
        results = {
            "mean_iou": np.nanmean(iou) if not np.isnan(iou).all() else np.float64(np.nan),
            "mean_accuracy": np.nanmean(accuracy) if not np.isnan(accuracy).all() else np.float64(np.nan),
            "overall_accuracy": hits.sum() / labelled.sum(),
            "per_category_iou": iou,
            "per_category_accuracy": accuracy,
        }
    if nan_to_num is not None:
        results = {key: np.nan_to_num(value, nan=nan_to_num) for key, value in results.items()}
    return results
