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
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..errors import SegtuneError

# One (H, W) map, a (B, H, W) batch, or a sequence of (H, W) maps whose sizes may differ.
Maps = torch.Tensor | np.ndarray | Sequence[Any]

# The flat bin index is int16 or int32, never int64 (memory traffic): (K + 2) ** 2 + 1 bins must fit in int32.
MAX_NUM_LABELS = 46_000

# The fast path's int16 index holds 256 reference values x K predictions.
_FAST_MAX_LABELS = torch.iinfo(torch.int16).max // 256

# The fast path makes fewer, cheaper passes: its chunks can be this many times larger (still one thread).
_FAST_CHUNK_FACTOR = 8

# Pixels per CPU chunk: below torch's intra-op grain size (32768 elements), so every op runs on the calling thread.
_CPU_CHUNK = 24_576


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
        # torch warns on read-only arrays (np.asarray of a PIL image is one); a copy is cheap next to the count
        values = torch.from_numpy(array if array.flags.writeable else array.copy())
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


def _bounded(values: torch.Tensor, num_labels: int, dtype: torch.dtype) -> torch.Tensor:
    """A fresh copy of `values` in `dtype`, clamped to [-1, K]: -1 stands for all values below 0, K for all >= K."""
    if values.itemsize > dtype.itemsize:
        # clamp before narrowing, so that a wide value cannot wrap around into [0, K)
        return values.clamp(-1, num_labels).to(dtype)
    # copy=True: the caller works in place on the result, which must never be the caller's own tensor
    return values.to(dtype, copy=True).clamp_(-1, num_labels)


def _grid(prediction: torch.Tensor, reference: torch.Tensor, num_labels: int, ignore_index: int | None) -> torch.Tensor:
    """(K + 2, K + 2) int64 counts of (reference, prediction) pairs; row/column 0 is "< 0", K + 1 is ">= K"."""
    side = num_labels + 2
    prediction, reference = prediction.reshape(-1), reference.reshape(-1)
    # On CPU the map goes in chunks. Their temporaries stay in cache, in memory the allocator reuses (a whole
    # 1024x2048 map at once costs ~9000 page faults, half its time), and each op is too small for torch's
    # thread pool: measured on 2 cores, pooled ops were ~1.6x faster when idle but up to 50x slower whenever
    # another process held a core (as DataLoader workers do): the pool's threads wait for each other at every op.
    # On GPU, a chunk is the whole map.
    step = _CPU_CHUNK if prediction.device.type == "cpu" else max(prediction.numel(), 1)
    if _in_fast_range(prediction, reference, num_labels):
        fast = torch.zeros(256 * num_labels, dtype=torch.int64, device=prediction.device)
        for start in range(0, prediction.numel(), step):
            fast += _fast_counts(prediction[start : start + step], reference[start : start + step], num_labels)
        return _fold_fast(fast, num_labels, ignore_index)
    counts = torch.zeros(side * side + 1, dtype=torch.int64, device=prediction.device)
    for start in range(0, prediction.numel(), step):
        chunk = slice(start, start + step)
        counts += _bin_counts(prediction[chunk], reference[chunk], num_labels, ignore_index)
    return counts[: side * side].view(side, side)


def _in_fast_range(prediction: torch.Tensor, reference: torch.Tensor, num_labels: int) -> bool:
    """Predictions in [0, K) and references in [0, 256): what a model's argmax and a label map hold."""
    if num_labels > _FAST_MAX_LABELS or prediction.numel() == 0:
        return False
    if prediction.is_floating_point() or reference.is_floating_point():
        return False
    low, high = torch.aminmax(prediction)
    ref_low, ref_high = torch.aminmax(reference)
    return bool((low >= 0) & (high < num_labels) & (ref_low >= 0) & (ref_high < 256))


def _fast_counts(prediction: torch.Tensor, reference: torch.Tensor, num_labels: int) -> torch.Tensor:
    """Counts of `reference * K + prediction` over 256 x K bins: no clamping, no masking (in range by check).

    The ignore index and out-of-range references land in rows K..255, past the K x K grid.
    """
    index = reference.to(torch.int16).mul_(num_labels).add_(prediction.to(torch.int16))
    return torch.bincount(index, minlength=256 * num_labels)


def _fold_fast(counts: torch.Tensor, num_labels: int, ignore_index: int | None) -> torch.Tensor:
    """The (K + 2, K + 2) layout of `_grid` from `_fast_counts`: ignore row dropped, other rows >= K summed
    into the ">= K" row."""
    k = num_labels
    rows = counts.view(256, k)  # (reference value, prediction)
    outside = torch.ones(256, dtype=torch.bool, device=rows.device)
    outside[:k] = False
    if ignore_index is not None and 0 <= ignore_index < 256:
        outside[ignore_index] = False
    grid = torch.zeros(k + 2, k + 2, dtype=torch.int64, device=rows.device)  # row/column 0: "< 0", K + 1: ">= K"
    grid[1 : k + 1, 1 : k + 1] = rows[:k]
    grid[k + 1, 1 : k + 1] = rows[outside].sum(0)
    if ignore_index is not None and 0 <= ignore_index < k:  # an ignore index among the classes is not counted
        grid[ignore_index + 1] = 0
    return grid


def _bin_counts(
    prediction: torch.Tensor, reference: torch.Tensor, num_labels: int, ignore_index: int | None
) -> torch.Tensor:
    """The flat grid's (K + 2) ** 2 counts, then the count of ignored pixels.

    Boolean-mask indexing (`prediction[reference != ignore_index]`) compacts the kept pixels into a
    new array: a prefix sum and a copy on CPU, and a device-to-host sync on GPU to learn its size.
    Instead every pixel gets a bin, ignored pixels the one past the grid, and one `bincount` counts
    them all; bench/metric_speed.py times both.
    """
    side = num_labels + 2
    # the narrowest index dtype that holds every bin: less memory traffic in each of the passes below
    dtype = torch.int16 if side * side < torch.iinfo(torch.int16).max else torch.int32
    # (reference + 1) * side + (prediction + 1), in place on the fresh copies (an allocation costs as much as a pass)
    index = _bounded(prediction, num_labels, dtype).add_(_bounded(reference, num_labels, dtype), alpha=side)
    index.add_(side + 1)
    info = torch.iinfo(reference.dtype)
    # torch casts a Python scalar to the tensor's dtype (uint8 == -100 would match 156): compare only when it fits
    if ignore_index is not None and info.min <= ignore_index <= info.max:
        index.masked_fill_(reference == ignore_index, side * side)
    return torch.bincount(index, minlength=side * side + 1)


def _fold(grid: torch.Tensor, num_labels: int, outside_bin: bool) -> torch.Tensor:
    """(..., K, K) from (..., K + 2, K + 2) grids, or (..., K + 1, K + 1) with "< 0" and ">= K" merged into index K."""
    inside = slice(1, num_labels + 1)
    if not outside_bin:
        return grid[..., inside, inside].contiguous()
    rows = torch.cat([grid[..., inside, :], grid[..., :1, :] + grid[..., -1:, :]], dim=-2)  # (..., K + 1, K + 2)
    return torch.cat([rows[..., inside], rows[..., :1] + rows[..., -1:]], dim=-1)  # (..., K + 1, K + 1)


def confusion_matrix(
    predictions: Maps,
    references: Maps,
    num_labels: int,
    ignore_index: int | None = 255,
    outside_bin: bool = False,
) -> torch.Tensor:
    """Confusion matrix of segmentation maps: rows are the reference label, columns the prediction.

    Args:
        predictions, references: an (H, W) map, a (B, H, W) batch, or a sequence of (H, W) maps
            whose sizes may differ; integer torch tensors on any device, NumPy arrays or lists.
        num_labels: K, the number of classes.
        ignore_index: reference value whose pixels are not counted (None: count every pixel).
        outside_bin: also count values outside [0, K) that are not `ignore_index`, in an extra
            last row (references) and column (predictions).

    Returns:
        A (K, K) int64 tensor, or (K + 1, K + 1) with `outside_bin`, on the predictions' device.
        Without `outside_bin`, pixels whose reference or prediction is outside [0, K) are not counted.

    Raises:
        MetricError: num_labels is not an int >= 1, or the maps do not pair up (see `paired_maps`).
    """
    num_labels = check_num_labels(num_labels, "confusion_matrix")
    pairs = paired_maps(predictions, references)
    side = num_labels + 2
    if not pairs:
        return _fold(torch.zeros(side, side, dtype=torch.int64), num_labels, outside_bin)
    total = sum(_grid(p, r, num_labels, ignore_index).to(pairs[0][0].device) for p, r in pairs)
    return _fold(total, num_labels, outside_bin)


def per_sample_confusion(
    predictions: Maps,
    references: Maps,
    num_labels: int,
    ignore_index: int | None = 255,
    outside_bin: bool = False,
) -> torch.Tensor:
    """One confusion matrix per sample, for `accelerator.gather_for_metrics`.

    Accelerate pads the last batch of an uneven split with duplicated samples and
    `gather_for_metrics` drops them, but only along dim 0 of what it gathers: a per-batch sum would
    keep the duplicates in. Gather these instead, then `MeanIoU.add_confusion(gathered)`.

    Args: as `confusion_matrix`; a single (H, W) map is one sample.

    Returns:
        A (B, K, K) int64 tensor, or (B, K + 1, K + 1) with `outside_bin`, on the predictions' device.

    Raises:
        MetricError: as `confusion_matrix`.
    """
    num_labels = check_num_labels(num_labels, "per_sample_confusion")
    samples = []
    for prediction, reference in paired_maps(predictions, references):
        samples += list(zip(prediction, reference)) if prediction.ndim == 3 else [(prediction, reference)]
    side = num_labels + 2
    if not samples:
        return _fold(torch.zeros(0, side, side, dtype=torch.int64), num_labels, outside_bin)
    device = samples[0][0].device
    grids = torch.stack([_grid(p, r, num_labels, ignore_index).to(device) for p, r in samples])
    return _fold(grids, num_labels, outside_bin)


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
