"""Confusion matrices of segmentation maps, and the mean-IoU metrics read from them.

Rows are the reference label, columns the prediction. Pixels whose reference is `ignore_index` are
not counted. A confusion matrix is additive, so it is all a streaming or distributed metric needs
to keep: sum the per-batch (or gathered per-sample) matrices, then call `metrics_from_confusion`.

    matrix = confusion_matrix(logits.argmax(1), labels, num_labels=19)   # (19, 19) int64
    results = metrics_from_confusion(matrix)                             # mean_iou, ...

Values outside [0, num_labels) that are not `ignore_index` have no cell in a (K, K) matrix, yet
evaluate's `mean_iou` still counts them in one marginal: a pixel labelled `c` and predicted 255
counts as a labelled pixel of `c` that was missed. `outside_bin=True` keeps them in one extra row
and column (index K), so that `metrics_from_confusion` reproduces evaluate's numbers exactly.
`label_map=` and `reduce_labels=` remap the references as evaluate's `mean_iou` does. The counting
itself (raw value pairs, then the fold into K + 1 rows and columns) is in `pair_counts`.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from ..errors import SegtuneError
from .pair_counts import PairCounts

# One (H, W) map, a (B, H, W) batch, or a sequence of (H, W) maps whose sizes may differ.
Maps = torch.Tensor | np.ndarray | Sequence[Any]

# The largest K accepted. A MeanIoU without num_labels counts predictions clamped to [-1, MAX_NUM_LABELS], so this
# must stay within pair_counts.MAX_PREDICTION.
MAX_NUM_LABELS = 46_000


class MetricError(SegtuneError, ValueError):
    """Inputs a segmentation metric cannot use: shapes, dtypes, num_labels, matrix sizes."""


def check_num_labels(num_labels: Any, where: str) -> int:
    """`num_labels` as an int. Raises MetricError (naming `where`) unless it is an int in [1, MAX_NUM_LABELS]."""
    if isinstance(num_labels, bool) or not isinstance(num_labels, (int, np.integer)) or num_labels < 1:
        raise MetricError(f"{where}: num_labels: expected an int >= 1, found {num_labels!r}")
    if num_labels > MAX_NUM_LABELS:
        raise MetricError(f"{where}: num_labels: expected at most {MAX_NUM_LABELS}, found {num_labels}")
    return int(num_labels)


def as_label_tensor(values: Any, name: str) -> torch.Tensor:
    """An integer tensor of class indices (uint8, int8, int16, int32 or int64) from a tensor, array, list or PIL image.

    Raises:
        MetricError: the values are floating point or complex (named by `name`).
    """
    if not isinstance(values, torch.Tensor):
        array = np.asarray(values)
        # torch warns on read-only arrays (np.asarray of a PIL image is one) and refuses negative strides (np.flip);
        # a copy is cheap next to the count
        usable = array.flags.writeable and all(stride >= 0 for stride in array.strides)
        values = torch.from_numpy(array if usable else array.copy())
    if values.is_floating_point() or values.is_complex():
        raise MetricError(f"{name}: expected integer class indices, found dtype {values.dtype}")
    # Widen the dtypes torch has few kernels for; every value is kept.
    widen = {torch.bool: torch.uint8, torch.uint16: torch.int32, torch.uint32: torch.int64, torch.uint64: torch.int64}
    return values.to(widen[values.dtype]) if values.dtype in widen else values


def paired_maps(predictions: Maps, references: Maps) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(prediction, reference) tensor pairs of equal shape: the whole batch for two arrays, else one pair per map.

    References are moved to their prediction's device.

    Raises:
        MetricError: a different number of predictions and references, a map that is not (H, W)
            or a batch that is not (B, H, W), a prediction and reference of different shapes, or
            non-integer values. The message names both shapes (and the map's index).
    """
    if isinstance(predictions, (torch.Tensor, np.ndarray)) and isinstance(references, (torch.Tensor, np.ndarray)):
        names = ("predictions", "references")
        return [_checked(*(as_label_tensor(x, n) for x, n in zip((predictions, references), names)), names, (2, 3))]
    if len(predictions) != len(references):
        raise MetricError(
            f"expected as many predictions as references, found {len(predictions)} predictions "
            f"and {len(references)} references"
        )
    pairs = []
    for i, (prediction, reference) in enumerate(zip(predictions, references)):
        names = (f"predictions[{i}]", f"references[{i}]")
        pair = (as_label_tensor(prediction, names[0]), as_label_tensor(reference, names[1]))
        pairs.append(_checked(*pair, names, (2,)))
    return pairs


_SHAPE_NAMES = {2: "(H, W)", 3: "(B, H, W)"}


def _checked(
    prediction: torch.Tensor, reference: torch.Tensor, names: tuple[str, str], ndims: tuple[int, ...]
) -> tuple[torch.Tensor, torch.Tensor]:
    if prediction.ndim not in ndims:
        expected = " or ".join(_SHAPE_NAMES[n] for n in ndims)
        raise MetricError(f"{names[0]}: expected shape {expected}, found {tuple(prediction.shape)}")
    if prediction.shape != reference.shape:
        raise MetricError(
            f"{names[0]} and {names[1]} must have the same shape, found {tuple(prediction.shape)} "
            f"and {tuple(reference.shape)}"
        )
    return prediction, reference.to(prediction.device)


def confusion_matrix(
    predictions: Maps,
    references: Maps,
    num_labels: int,
    ignore_index: int | None = 255,
    outside_bin: bool = False,
    *,
    label_map: Mapping[int, int] | None = None,
    reduce_labels: bool = False,
) -> torch.Tensor:
    """Confusion matrix of segmentation maps: rows are the reference label, columns the prediction.

    Args:
        predictions, references: an (H, W) map, a (B, H, W) batch, or a sequence of (H, W) maps
            whose sizes may differ; integer torch tensors on any device, NumPy arrays or lists.
        num_labels: K, the number of classes.
        ignore_index: reference value whose pixels are not counted (None: count every pixel).
        outside_bin: also count values outside [0, K) that are not `ignore_index`, in an extra
            last row (references) and column (predictions).
        label_map, reduce_labels: evaluate's `mean_iou` remapping of the references, applied before
            `ignore_index` (see `PairCounts.confusion`).

    Returns:
        A (K, K) int64 tensor, or (K + 1, K + 1) with `outside_bin`, on the (first) predictions' device.
        Without `outside_bin`, pixels whose reference or prediction is outside [0, K) are not counted.

    Raises:
        MetricError: num_labels is not an int >= 1, or the maps do not pair up (see `paired_maps`).
    """
    num_labels = check_num_labels(num_labels, "confusion_matrix")
    pairs = paired_maps(predictions, references)
    counts = PairCounts(pairs[0][0].device if pairs else None)
    for prediction, reference in pairs:
        counts.count(prediction, reference, max_prediction=num_labels)
    matrix = counts.confusion(num_labels, ignore_index, label_map, reduce_labels)
    return matrix if outside_bin else matrix[:num_labels, :num_labels].contiguous()


def per_sample_confusion(predictions: Maps, references: Maps, num_labels: int, **settings: Any) -> torch.Tensor:
    """One confusion matrix per sample (`confusion_matrix` of each), for `accelerator.gather_for_metrics`.

    Accelerate pads the last batch of an uneven split with duplicated samples and
    `gather_for_metrics` drops them, but only along dim 0 of what it gathers: a per-batch sum would
    keep the duplicates in. Gather these instead, then `MeanIoU.add_confusion(gathered)`.

    Args: as `confusion_matrix` (`settings`: ignore_index, outside_bin, label_map, reduce_labels); a single
        (H, W) map is one sample.

    Returns:
        A (B, K, K) int64 tensor, or (B, K + 1, K + 1) with `outside_bin`, on the (first) predictions' device.

    Raises:
        MetricError: as `confusion_matrix`.
        TypeError: a setting `confusion_matrix` does not take.
    """
    num_labels = check_num_labels(num_labels, "per_sample_confusion")
    samples = []
    for prediction, reference in paired_maps(predictions, references):
        samples += list(zip(prediction, reference)) if prediction.ndim == 3 else [(prediction, reference)]
    if not samples:
        side = num_labels + int(settings.get("outside_bin", False))
        return torch.zeros(0, side, side, dtype=torch.int64)
    device = samples[0][0].device
    return torch.stack([confusion_matrix(p, r, num_labels, **settings).to(device) for p, r in samples])


def metrics_from_confusion(
    matrix: torch.Tensor | np.ndarray,
    nan_to_num: float | None = None,
    outside_bin: bool = False,
) -> dict[str, Any]:
    """Mean IoU and accuracies from a confusion matrix, with the keys and numbers of evaluate's `mean_iou`.

    Per class c: IoU = hits / (labelled + predicted - hits) and accuracy = hits / labelled, where
    hits is the diagonal, labelled the row sum and predicted the column sum. A class absent from
    both references and predictions gets NaN, which `np.nanmean` skips in the means.

    Args:
        matrix: a (K, K) count matrix (rows: reference, columns: prediction); with `outside_bin`,
            (K + 1, K + 1) whose last row and column count values outside [0, K).
        nan_to_num: replace every NaN in the results (means included) with this value.

    Returns:
        `mean_iou`, `mean_accuracy`, `overall_accuracy` (np.float64: total hits / total labelled
        pixels) and `per_category_iou`, `per_category_accuracy` (float64 arrays of shape (K,)).

    Raises:
        MetricError: the matrix is not square and 2-D, or has fewer than 1 class.
    """
    counts = matrix.detach().cpu().numpy() if isinstance(matrix, torch.Tensor) else np.asarray(matrix)
    num_labels = counts.shape[0] - int(outside_bin) if counts.ndim == 2 else 0
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1] or num_labels < 1:
        expected = "(K + 1, K + 1) with K >= 1 (outside_bin=True)" if outside_bin else "(K, K) with K >= 1"
        raise MetricError(f"metrics_from_confusion: expected a {expected} matrix, found shape {counts.shape}")
    counts = counts.astype(np.int64)
    hits = np.diagonal(counts)[:num_labels]
    labelled = counts[:num_labels].sum(axis=1)  # includes predictions in the outside column
    predicted = counts[:, :num_labels].sum(axis=0)  # includes references in the outside row
    with np.errstate(divide="ignore", invalid="ignore"):  # 0 / 0 is the documented NaN of an absent class
        iou = hits / (labelled + predicted - hits)
        accuracy = hits / labelled
        overall = np.float64(hits.sum()) / np.float64(labelled.sum())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "Mean of empty slice" when every class is absent
        results = {
            "mean_iou": np.nanmean(iou),
            "mean_accuracy": np.nanmean(accuracy),
            "overall_accuracy": overall,
            "per_category_iou": iou,
            "per_category_accuracy": accuracy,
        }
    if nan_to_num is not None:
        results = {key: np.nan_to_num(value, nan=nan_to_num) for key, value in results.items()}
    return results


__all__ = [
    "MAX_NUM_LABELS",
    "MetricError",
    "confusion_matrix",
    "metrics_from_confusion",
    "per_sample_confusion",
]
