"""Confusion matrices of segmentation maps (rows: reference, columns: prediction), counted along one path.

evaluate's `mean_iou` settings act on values alone, so `_fold` may apply them to every pixel or, weighted by its
count, to each distinct (reference, prediction) pair alike. `PairCounts` counts pairs before the settings are
known, as `MeanIoU()` must: one `index_add_` of `reference * columns + prediction` into a table over the values
seen so far (pairs too far apart for one table are sorted). evaluate counts values outside [0, K) in one marginal
(a pixel labelled `c` and predicted 255 is a miss of `c`): `outside_bin=True` keeps them in a last row and column.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from ..errors import SegtuneError

Maps = torch.Tensor | np.ndarray | Sequence[Any]  # an (H, W) map, a (B, H, W) batch, or (H, W) maps of any sizes
MAX_NUM_LABELS = 46_000  # the largest num_labels accepted; MeanIoU() keeps predictions up to it apart

# CPU maps are counted in chunks below torch's intra-op grain size (32768 elements), with NumPy (a fraction of
# torch's overhead per call): every op runs on the calling thread, on temporaries that stay in cache. A thread
# pool is much slower whenever another process (a DataLoader worker) holds a core: its threads wait for each other.
_CPU_CHUNK = 24_576
_CHUNKED = ("cpu",)  # device types counted in chunks; on the others a map is one chunk, and `_fold` runs per pixel
_MAX_CELLS = 1 << 22  # the table's limit (32 MiB of int64)
_NEAR = 1023  # a chunk too wide for the table still gets one over its values this close to 0 (class ids)
_INT32 = 1 << 31  # the table holds int32 values only: reference * columns + prediction never overflows


class MetricError(SegtuneError, ValueError):
    """Inputs a segmentation metric cannot use: shapes, dtypes, num_labels, matrix sizes."""


def check_num_labels(num_labels: Any, where: str, purpose: str = "", fix: str = "") -> int:
    """`num_labels` as an int; MetricError (naming `where`, what it is for and a fix) unless in [1, MAX_NUM_LABELS]."""
    if isinstance(num_labels, bool) or not isinstance(num_labels, (int, np.integer)) or num_labels < 1:
        raise MetricError(f"{where}: num_labels: expected an int >= 1{purpose}, found {num_labels!r}{fix}")
    if num_labels > MAX_NUM_LABELS:
        raise MetricError(f"{where}: num_labels: expected at most {MAX_NUM_LABELS}, found {num_labels}")
    return int(num_labels)


def paired_maps(predictions: Maps, references: Maps) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(prediction, reference) integer tensors of one shape, on the prediction's device: the whole batch for two
    arrays, else one pair per map (tensors, arrays, lists or PIL images). Raises MetricError, naming maps and
    shapes, for unequal counts or shapes, maps not (H, W) nor (B, H, W), or non-integers."""
    if isinstance(predictions, (torch.Tensor, np.ndarray)) and isinstance(references, (torch.Tensor, np.ndarray)):
        return [_checked(predictions, references, ("predictions", "references"), (2, 3))]
    if len(predictions) != len(references):
        raise MetricError(
            f"expected as many predictions as references, found {len(predictions)} predictions "
            f"and {len(references)} references"
        )
    names = [(f"predictions[{i}]", f"references[{i}]") for i in range(len(predictions))]
    return [_checked(p, r, pair, (2,)) for p, r, pair in zip(predictions, references, names)]


def _checked(prediction: Any, reference: Any, names: tuple[str, str], ndims: tuple[int, ...]):
    prediction, reference = _label_tensor(prediction, names[0]), _label_tensor(reference, names[1])
    if prediction.ndim not in ndims:
        expected = " or ".join({2: "(H, W)", 3: "(B, H, W)"}[n] for n in ndims)
        raise MetricError(f"{names[0]}: expected shape {expected}, found {tuple(prediction.shape)}")
    if prediction.shape != reference.shape:
        raise MetricError(
            f"{names[0]} and {names[1]} must have the same shape, found {tuple(prediction.shape)} "
            f"and {tuple(reference.shape)}"
        )
    return prediction, reference.to(prediction.device)


def _label_tensor(values: Any, name: str) -> torch.Tensor:
    if not isinstance(values, torch.Tensor):
        array = np.asarray(values)  # torch refuses negative strides (np.flip) and warns on read-only (PIL): copy
        values = torch.from_numpy(
            array if array.flags.writeable and min(array.strides, default=0) >= 0 else array.copy()
        )
    if values.is_floating_point() or values.is_complex():
        raise MetricError(f"{name}: expected integer class indices, found dtype {values.dtype}")
    widen = {torch.bool: torch.uint8, torch.uint16: torch.int32, torch.uint32: torch.int64, torch.uint64: torch.int64}
    return values.to(widen[values.dtype]) if values.dtype in widen else values  # dtypes torch has few kernels for


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
    """The int64 confusion matrix of `paired_maps` on the (first) predictions' device: (K, K) without the pixels
    outside [0, K), or with `outside_bin` (K + 1, K + 1), counting them last. The references are remapped as
    evaluate does (see `_fold`); `ignore_index` (None: none) is not counted. Raises MetricError for bad inputs."""
    k = check_num_labels(num_labels, "confusion_matrix")
    matrix = pairs_confusion(paired_maps(predictions, references), k, ignore_index, label_map, reduce_labels)
    return matrix if outside_bin else matrix[:k, :k].contiguous()


def pairs_confusion(pairs: list[tuple[torch.Tensor, torch.Tensor]], num_labels: int, *settings: Any) -> torch.Tensor:
    """The (K + 1, K + 1) `_fold` of `paired_maps` under (ignore_index, label_map, reduce_labels): on the CPU, of
    their raw pairs' counts; on an accelerator, of every pixel, where it lies (no host sync)."""
    device = pairs[0][0].device if pairs else torch.device("cpu")  # the first predictions'
    if device.type not in _CHUNKED:
        return sum(_fold((r.flatten(), p.flatten(), None), num_labels, *settings).to(device) for p, r in pairs)
    counts = PairCounts()
    for prediction, reference in pairs:
        counts.count(prediction, reference, max_prediction=num_labels)
    return counts.confusion(num_labels, *settings)


def per_sample_confusion(predictions: Maps, references: Maps, num_labels: int, **settings: Any) -> torch.Tensor:
    """A (B, K, K) or (B, K + 1, K + 1) stack of `confusion_matrix(..., **settings)`, one per sample: what
    `gather_for_metrics` needs to drop the duplicates that pad an uneven last batch (along dim 0 only, so a
    per-batch sum would keep them). Raises as `confusion_matrix`."""
    num_labels = check_num_labels(num_labels, "per_sample_confusion")
    maps = paired_maps(predictions, references)
    samples = [pair for p, r in maps for pair in (zip(p, r) if p.ndim == 3 else [(p, r)])]
    if not samples:
        side = num_labels + int(settings.get("outside_bin", False))
        return torch.zeros(0, side, side, dtype=torch.int64)
    return torch.stack([confusion_matrix(p, r, num_labels, **settings).to(samples[0][0].device) for p, r in samples])


def metrics_from_confusion(
    matrix: torch.Tensor | np.ndarray, nan_to_num: float | None = None, outside_bin: bool = False
) -> dict[str, Any]:
    """evaluate's `mean_iou` results from a (K, K) or (`outside_bin`) (K + 1, K + 1) matrix: `mean_iou`,
    `mean_accuracy`, `overall_accuracy` (np.float64), `per_category_iou` and `per_category_accuracy` ((K,)). Per
    class, IoU = hits / (labelled + predicted - hits), accuracy = hits / labelled; an absent class is NaN, left out
    of the means (`nan_to_num` replaces NaNs). Raises MetricError unless the matrix is 2-D, square, K >= 1."""
    counts = np.asarray(matrix.detach().cpu() if isinstance(matrix, torch.Tensor) else matrix)
    k = counts.shape[0] - int(outside_bin) if counts.ndim == 2 else 0
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1] or k < 1:
        expected = "(K + 1, K + 1) with K >= 1 (outside_bin=True)" if outside_bin else "(K, K) with K >= 1"
        raise MetricError(f"metrics_from_confusion: expected a {expected} matrix, found shape {counts.shape}")
    counts = counts.astype(np.int64)  # no overflow in the sums below, whatever the matrix's dtype
    hits = np.diagonal(counts)[:k]
    labelled = counts[:k].sum(axis=1)  # includes predictions in the outside column
    predicted = counts[:, :k].sum(axis=0)  # includes references in the outside row
    with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # 0 / 0 is an absent class's NaN; nanmean of all-NaN too
        iou, accuracy = hits / (labelled + predicted - hits), hits / labelled
        overall = np.float64(hits.sum()) / np.float64(labelled.sum())
        results = {"mean_iou": np.nanmean(iou), "mean_accuracy": np.nanmean(accuracy), "overall_accuracy": overall}
    results.update(per_category_iou=iou, per_category_accuracy=accuracy)
    if nan_to_num is not None:
        results = {key: np.nan_to_num(value, nan=nan_to_num) for key, value in results.items()}
    return results


class PairCounts:
    """How often each raw (reference, prediction) value pair occurred, in int64 on `device`: `table[i, j]` counts
    (r0 + i, p0 + j), and `sorted` holds (references, predictions, counts) of the pairs outside it, each once."""

    def __init__(self, device: torch.device | str | None = None) -> None:
        self.device = torch.device(device or "cpu")
        self.table = torch.zeros(0, 0, dtype=torch.int64, device=self.device)
        self.r0 = self.p0 = 0
        self.sorted = (self.table.view(-1),) * 3

    def count(self, prediction: torch.Tensor, reference: torch.Tensor, max_prediction: int = MAX_NUM_LABELS) -> None:
        """Count the pixel pairs of two integer maps of one shape, on `device` (on an accelerator: one host sync).
        Predictions below 0 count as -1, those above `max_prediction` as it: outside for any num_labels up to it."""
        prediction, reference = prediction.to(self.device).reshape(-1), reference.to(self.device).reshape(-1)
        step = max(len(prediction), 1)
        if self.device.type in _CHUNKED:
            prediction, reference, step = prediction.numpy(), reference.numpy(), _CPU_CHUNK
        for start in range(0, len(prediction), step):
            self._count_chunk(prediction[start : start + step], reference[start : start + step], max_prediction)

    def confusion(self, num_labels: int, *settings: Any) -> torch.Tensor:
        """`_fold` of everything counted, under (ignore_index, label_map, reduce_labels)."""
        rows, columns = self.table.nonzero(as_tuple=True)
        table = (rows + self.r0, columns + self.p0, self.table[rows, columns])
        return _fold([torch.cat(parts) for parts in zip(table, self.sorted)], num_labels, *settings)

    def _count_chunk(self, prediction, reference, max_prediction: int) -> None:
        p_low, p_high, r_low, r_high = _extents(prediction, reference)
        if p_low < -1 or p_high > max_prediction:
            p_low, p_high = (min(max(value, -1), max_prediction) for value in (p_low, p_high))
            prediction = prediction.clip(p_low, p_high)
        if self._grow(r_low, r_high, p_low, p_high):
            return self._count_in_table(prediction, reference)
        self._grow(max(r_low, -_NEAR), min(r_high, _NEAR), p_low, min(p_high, _NEAR))
        reference, prediction = _int64(reference), _int64(prediction)  # a uint8 map compared with -1 would wrap
        (rows, columns), r0, p0 = self.table.shape, self.r0, self.p0
        inside = (reference >= r0) & (reference < r0 + rows) & (prediction >= p0) & (prediction < p0 + columns)
        self._count_in_table(prediction[inside], reference[inside])
        references, predictions = torch.as_tensor(reference[~inside]), torch.as_tensor(prediction[~inside])
        pairs = zip(self.sorted, (references, predictions, torch.ones_like(references)))
        self.sorted = _sorted_counts(*(torch.cat(parts) for parts in pairs))

    def _count_in_table(self, prediction, reference) -> None:
        columns, offset = self.table.shape[1], self.r0 * self.table.shape[1] + self.p0
        index = _int64(reference) * columns
        index += prediction
        if offset:
            index -= offset
        self.table.view(-1).index_add_(0, torch.as_tensor(index), _ones(len(index), self.device))

    def _grow(self, r_low: int, r_high: int, p_low: int, p_high: int) -> bool:
        """Extend the table over these values (bounds included); False, and no change, if it cannot."""
        (rows, columns), r0, p0 = self.table.shape, self.r0, self.p0
        if rows:
            if r0 <= r_low and r_high < r0 + rows and p0 <= p_low and p_high < p0 + columns:
                return True
            r_low, r_high = min(r_low, r0), max(r_high, r0 + rows - 1)
            p_low, p_high = min(p_low, p0), max(p_high, p0 + columns - 1)
        shape = (r_high - r_low + 1, p_high - p_low + 1)
        if min(shape) < 1 or shape[0] * shape[1] > _MAX_CELLS or r_low < -_INT32 or r_high >= _INT32:
            return False
        table = torch.zeros(shape, dtype=torch.int64, device=self.device)
        table[r0 - r_low : r0 - r_low + rows, p0 - p_low : p0 - p_low + columns] = self.table
        self.table, self.r0, self.p0 = table, r_low, p_low
        return True


def _fold(pairs: Sequence[Any], num_labels: int, ignore_index=255, label_map=None, reduce_labels=False) -> torch.Tensor:
    """The (K + 1, K + 1) int64 matrix of 1-D references, predictions and counts (None: once each) under evaluate's
    settings, all elementwise: each `label_map` key is looked up in the original references, then `reduce_labels`
    turns 0 into 255, subtracts 1 and 254 back into 255; references then equal to `ignore_index` are not counted."""
    (references, predictions, counts), k = pairs, num_labels
    labels = references.to(torch.int64, copy=True)  # any key, new value or 255 fits, whatever the map's dtype
    if label_map is not None:
        original = labels.clone()
        for old, new in label_map.items():
            labels.masked_fill_(original == old, new)
    if reduce_labels:
        labels = torch.where(labels == 0, 255, labels) - 1
        labels.masked_fill_(labels == 254, 255)
    predictions = predictions.to(torch.int64)
    rows = torch.where((labels >= 0) & (labels < k), labels, k)
    columns = torch.where((predictions >= 0) & (predictions < k), predictions, k)
    index = rows * (k + 1) + columns
    if ignore_index is not None and -(1 << 63) <= ignore_index < 1 << 63:  # else no int64 value can equal it
        index.masked_fill_(labels == ignore_index, (k + 1) ** 2)  # ignored pixels: one last bin, dropped
    counts = _ones(len(index), index.device) if counts is None else counts
    matrix = torch.zeros((k + 1) ** 2 + 1, dtype=torch.int64, device=index.device).index_add_(0, index, counts)
    return matrix[:-1].view(k + 1, k + 1)


def _extents(prediction, reference) -> list[int]:
    """min and max of the predictions, then of the references (of uint8 ones by their dtype, without a pass)."""
    if isinstance(prediction, np.ndarray):
        r_extent = (0, 255) if reference.dtype == np.uint8 else (reference.min(), reference.max())
        return [int(value) for value in (prediction.min(), prediction.max(), *r_extent)]
    extents = (*torch.aminmax(prediction), *torch.aminmax(reference))
    return torch.stack([value.to(torch.int64) for value in extents]).tolist()  # one host sync


def _int64(values):
    return values.astype(np.int64, copy=False) if isinstance(values, np.ndarray) else values.to(torch.int64)


def _ones(length: int, device: torch.device) -> torch.Tensor:
    return torch.ones(1, dtype=torch.int64, device=device).expand(length)


def _sorted_counts(references: torch.Tensor, predictions: torch.Tensor, counts: torch.Tensor):
    """(references, predictions, counts) with each pair once, by sorting: any int64 references, predictions in
    [-1, 2 ** 16 - 2] (a pair's key is its reference's rank * 2 ** 16 + prediction + 1)."""
    values, ranks = torch.unique(references, return_inverse=True)
    keys, inverse = torch.unique((ranks << 16) + predictions + 1, return_inverse=True)
    summed = torch.zeros(len(keys), dtype=torch.int64, device=keys.device).index_add_(0, inverse, counts)
    return values[keys >> 16], (keys & 0xFFFF) - 1, summed
