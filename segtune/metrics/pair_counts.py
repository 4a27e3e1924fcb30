"""Counts of raw (reference value, prediction value) pairs, folded into a confusion matrix under evaluate's settings.

Every confusion matrix in segtune.metrics comes from here. Maps are counted by their raw values, before
`num_labels`, `ignore_index`, `reduce_labels` or `label_map` are applied; `PairCounts.confusion` then
applies them, as evaluate's `mean_iou` applies them to every pixel, to each distinct reference value
instead. The two agree exactly, because all four act on values alone. This lets `MeanIoU()` accumulate
before it knows num_labels, as users of `evaluate.load("mean_iou")` do:

    counts = PairCounts(device)
    counts.count(prediction, reference, max_prediction=MAX_NUM_LABELS)   # any number of times
    matrix = counts.confusion(num_labels=19, ignore_index=255)          # (20, 20): index 19 is "outside"

Counting is one pass per CPU chunk: the chunk's value ranges pick a dense (reference, prediction) block,
and one `bincount` of `reference * columns + prediction` fills it (`index_add_` for a large block). In a
chunk whose values span too wide a range for a dense block (values like 2 ** 32), the pixels far from 0
are counted by sorting instead: slower, and as exact.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

# Pixels per CPU chunk: below torch's intra-op grain size (32768 elements), so every op runs on the calling thread.
# The chunk's temporaries stay in cache, in memory the allocator reuses (a whole 1024x2048 map at once costs ~9000
# page faults, half its time). Measured on 2 cores, pooled ops were ~1.6x faster when idle but up to 50x slower
# whenever another process held a core (as DataLoader workers do): the pool's threads wait for each other at every op.
_CPU_CHUNK = 24_576

# The dense block may hold this many cells (32 MiB of int64): enough for uint16 references x 64 predictions.
_DENSE_MAX_BINS = 1 << 22

# Blocks up to this many cells are counted with an int16 index and `bincount`; larger ones with `index_add_`.
_BINCOUNT_MAX_BINS = 1 << 14

_ONE = torch.ones(1, dtype=torch.int64)

# Label maps are usually bytes: a block that starts at 0 covers at least these reference values, so that it is
# sized once, not grown at every new label value.
_MIN_REFERENCE_ROWS = 256

# A chunk too wide for one block counts the pixels within this distance of 0 in the block, and sorts the others.
_NEAR_ZERO = 255

# A block starting this far above 0 starts at its lowest value instead (one subtraction per chunk, fewer rows).
_FAR_FROM_ZERO = 1024

# Sparse pairs are keyed as reference rank * 2 ** 16 + prediction + 1; predictions are clamped below 2 ** 16 - 1.
_PREDICTION_BITS = 16
MAX_PREDICTION = (1 << _PREDICTION_BITS) - 2

# Sparse pairs are merged (sorted, summed) once there are this many unmerged ones.
_MAX_LOOSE_PAIRS = 1 << 16


class PairCounts:
    """How often each (reference value, prediction value) pair occurred, over every map counted so far.

    Pairs inside a dense block (reference rows x prediction columns, starting at `reference_base`,
    `prediction_base`) are counted in place; the others are kept as (reference, prediction, count) triplets.
    All counts are int64 on `device`.
    """

    def __init__(self, device: torch.device | str | None = None) -> None:
        self.device = torch.device(device or "cpu")
        self.dense = torch.zeros(0, 0, dtype=torch.int64, device=self.device)  # (rows, columns)
        self.reference_base = 0
        self.prediction_base = 0
        self._loose: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []  # (references, predictions, counts)
        self._loose_count = 0

    def count(self, prediction: torch.Tensor, reference: torch.Tensor, max_prediction: int) -> None:
        """Count the pixel pairs of a map or a batch (any shape, both the same; integer dtypes).

        Predictions below 0 count as -1 and those above `max_prediction` as `max_prediction`: every
        confusion matrix with num_labels <= max_prediction treats them alike (as "outside"). Reference
        values are kept as they are, since reduce_labels, label_map or ignore_index may need any of them.
        Maps on another device are moved to this one.

        Raises:
            ValueError: max_prediction is not in [0, MAX_PREDICTION].
        """
        if not 0 <= max_prediction <= MAX_PREDICTION:
            raise ValueError(f"PairCounts.count: max_prediction: expected 0..{MAX_PREDICTION}, found {max_prediction}")
        prediction = prediction.to(self.device).reshape(-1)
        reference = reference.to(self.device).reshape(-1)
        # On GPU, a chunk is the whole map.
        step = _CPU_CHUNK if self.device.type == "cpu" else max(prediction.numel(), 1)
        for start in range(0, prediction.numel(), step):
            chunk = slice(start, start + step)
            self._count_chunk(prediction[chunk], reference[chunk], max_prediction)

    def pairs(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(references, predictions, counts): int64 vectors, one entry per pair counted (and none for the others).

        A pair may have several entries: its counts add up.
        """
        rows, columns = self.dense.nonzero(as_tuple=True)
        dense = (rows + self.reference_base, columns + self.prediction_base, self.dense[rows, columns])
        return tuple(torch.cat(parts) for parts in zip(dense, *self._loose))

    def confusion(
        self,
        num_labels: int,
        ignore_index: int | None = 255,
        label_map: Mapping[int, int] | None = None,
        reduce_labels: bool = False,
    ) -> torch.Tensor:
        """The (K + 1, K + 1) confusion matrix of everything counted, under evaluate's `mean_iou` settings.

        Rows are references, columns predictions; index K counts the values outside [0, K). References
        are remapped first (`label_map`, each value looked up in the original map), then reduced
        (`reduce_labels`: 0 becomes 255, the others drop by 1, 254 goes back to 255); pixels whose
        remapped reference equals `ignore_index` are not counted.

        Returns:
            An int64 tensor of shape (num_labels + 1, num_labels + 1) on `device`.
        """
        references, predictions, counts = self.pairs()
        k = num_labels
        # the remapping is a function of the value: apply it once per distinct reference value
        values, inverse = torch.unique(references, return_inverse=True)
        labels = evaluate_labels(values, label_map, reduce_labels)[inverse]
        counted = counts * ~_equal(labels, ignore_index)  # no boolean indexing: no device sync
        rows = torch.where((labels >= 0) & (labels < k), labels, k)
        columns = torch.where((predictions >= 0) & (predictions < k), predictions, k)
        matrix = torch.zeros((k + 1) * (k + 1), dtype=torch.int64, device=self.device)
        return matrix.index_add_(0, rows * (k + 1) + columns, counted).view(k + 1, k + 1)

    def _count_chunk(self, prediction: torch.Tensor, reference: torch.Tensor, max_prediction: int) -> None:
        p_low, p_high = _extent(prediction)
        # byte labels: no pass needed, and the block covers every byte value at once anyway
        r_low, r_high = (0, 255) if reference.dtype == torch.uint8 else _extent(reference)
        if p_low < -1 or p_high > max_prediction:
            # evaluate's histogram skips every prediction outside the classes alike: keep one value on each side
            low, high = (-1 if p_low < -1 else None), (max_prediction if p_high > max_prediction else None)
            prediction = prediction.clamp(low, high)
            p_low, p_high = (min(max(value, -1), max_prediction) for value in (p_low, p_high))
        if self._reserve(r_low, r_high, p_low, p_high):
            self._count_dense(prediction, reference)
        else:
            self._count_split(prediction, reference, (r_low, r_high), (p_low, p_high))

    def _count_split(
        self, prediction: torch.Tensor, reference: torch.Tensor, r_range: tuple[int, int], p_range: tuple[int, int]
    ) -> None:
        """A chunk whose values span too much for one block: the pixels inside a block near 0 (label maps, argmax
        predictions: most of them) are counted in it, the others by sorting."""
        r_low, r_high = max(r_range[0], -_NEAR_ZERO), min(r_range[1], _NEAR_ZERO)
        p_low, p_high = max(p_range[0], -1), min(p_range[1], _NEAR_ZERO)
        if r_low <= r_high and p_low <= p_high:
            self._reserve(r_low, r_high, p_low, p_high)  # may fail if the block is already large: it is kept as is
        # int64: comparing a uint8 map with -1 would wrap -1 around to 255
        prediction, reference = prediction.to(torch.int64), reference.to(torch.int64)
        rows, columns = self.dense.shape
        inside = (reference >= self.reference_base) & (reference < self.reference_base + rows)
        inside &= (prediction >= self.prediction_base) & (prediction < self.prediction_base + columns)
        self._count_dense(prediction[inside], reference[inside])
        outside = ~inside
        self._add_loose(*_sorted_counts(reference[outside], prediction[outside], torch.ones_like(reference[outside])))

    def _count_dense(self, prediction: torch.Tensor, reference: torch.Tensor) -> None:
        """Count pixels whose values all lie inside the dense block."""
        rows, columns = self.dense.shape
        bins = rows * columns
        # A small block: a narrow int16 index, and one bincount. A large one: bincount would zero and add every
        # cell per chunk (and is ~40x slower still with an int32 index), so each pixel adds 1 to its cell instead.
        if bins <= _BINCOUNT_MAX_BINS and self.device.type == "cpu":
            # NumPy: the same passes as torch, at a tenth of the overhead per call on these small chunks
            index = np.multiply(reference.numpy(), columns, dtype=np.intp)  # one pass: widen and scale
            np.add(index, prediction.numpy(), out=index, casting="unsafe")
            offset = self.reference_base * columns + self.prediction_base
            if offset:
                index -= offset
            self.dense.view(-1).add_(torch.from_numpy(np.bincount(index, minlength=bins)))
            return
        dtype = torch.int16 if bins <= _BINCOUNT_MAX_BINS else torch.int32
        index = _bin_index(prediction, reference, self.prediction_base, self.reference_base, columns, dtype)
        if dtype == torch.int16:
            self.dense.view(-1).add_(torch.bincount(index, minlength=bins))
        else:
            self.dense.view(-1).index_add_(0, index, _ONE.to(self.device).expand(len(index)))

    def _reserve(self, r_low: int, r_high: int, p_low: int, p_high: int) -> bool:
        """Grow the dense block to cover these value ranges; False (block unchanged) if it would pass its limit."""
        rows, columns = self.dense.shape
        r_base, p_base = self.reference_base, self.prediction_base
        if rows:
            if r_base <= r_low and r_high < r_base + rows and p_base <= p_low and p_high < p_base + columns:
                return True  # the usual case, after the first chunk
            r_low, r_high = min(r_low, r_base), max(r_high, r_base + rows - 1)
            p_low, p_high = min(p_low, p_base), max(p_high, p_base + columns - 1)
        # a block that starts at 0 (or just below) costs no subtraction per chunk
        new_r_base = min(r_low, 0) if r_low < _FAR_FROM_ZERO else r_low
        new_p_base = min(p_low, 0) if p_low < _FAR_FROM_ZERO else p_low
        r_end = max(r_high + 1, _MIN_REFERENCE_ROWS) if new_r_base <= 0 else r_high + 1
        new_rows, new_columns = r_end - new_r_base, p_high + 1 - new_p_base
        if new_rows * new_columns > _DENSE_MAX_BINS:
            return False
        grown = torch.zeros(new_rows, new_columns, dtype=torch.int64, device=self.device)
        if rows:
            top, left = r_base - new_r_base, p_base - new_p_base
            grown[top : top + rows, left : left + columns] = self.dense
        self.dense, self.reference_base, self.prediction_base = grown, new_r_base, new_p_base
        return True

    def _add_loose(self, references: torch.Tensor, predictions: torch.Tensor, counts: torch.Tensor) -> None:
        self._loose.append((references, predictions, counts))
        self._loose_count += len(counts)
        if self._loose_count > _MAX_LOOSE_PAIRS:  # bound the memory of maps with many distinct wide values
            merged = _sorted_counts(*(torch.cat(parts) for parts in zip(*self._loose)))
            self._loose, self._loose_count = [merged], len(merged[0])


def evaluate_labels(
    values: torch.Tensor, label_map: Mapping[int, int] | None = None, reduce_labels: bool = False
) -> torch.Tensor:
    """Reference values as evaluate's `mean_iou` sees them: after `label_map`, then `reduce_labels`.

    Every `label_map` key is looked up in the original values, so chains (1 -> 2, 2 -> 3) do not compound.
    `reduce_labels` turns 0 into 255, subtracts 1, and turns 254 (from 255) back into 255.

    Returns:
        A new int64 tensor of the same shape.
    """
    labels = values.to(torch.int64, copy=True)  # int64: any key, new value or 255 fits, whatever the map's dtype
    if label_map is not None:
        original = labels.clone()
        for old, new in label_map.items():
            labels.masked_fill_(original == old, new)
    if reduce_labels:
        labels = torch.where(labels == 0, 255, labels) - 1
        labels.masked_fill_(labels == 254, 255)
    return labels


def _extent(values: torch.Tensor) -> tuple[int, int]:
    if values.device.type == "cpu":  # NumPy's min and max: vectorised, and ~10x less overhead per small chunk
        array = values.numpy()
        return int(array.min()), int(array.max())
    low, high = torch.aminmax(values)
    return int(low), int(high)


def _equal(values: torch.Tensor, scalar: int | None) -> torch.Tensor:
    """values == scalar, and all False for None or a scalar that int64 cannot hold (no value can equal it)."""
    info = torch.iinfo(torch.int64)
    if scalar is None or not info.min <= scalar <= info.max:
        return torch.zeros_like(values, dtype=torch.bool)
    return values == scalar


def _bin_index(
    prediction: torch.Tensor, reference: torch.Tensor, p_base: int, r_base: int, columns: int, dtype: torch.dtype
) -> torch.Tensor:
    """(reference - r_base) * columns + (prediction - p_base) in `dtype`, which must hold the block's cell count.

    Every value is inside the block, so the result lies in [0, rows * columns).
    """
    if r_base <= 0 and p_base <= 0:
        # Every intermediate value lies in (-cells, cells): narrow first (less memory traffic in each pass),
        # then apply both offsets at once.
        index = reference.to(dtype, copy=True).mul_(columns).add_(prediction.to(dtype))
        offset = r_base * columns + p_base
        return index.sub_(offset) if offset else index
    # raw values far from 0 may not fit the narrow dtype: offset them in int64 first
    index = (reference.to(torch.int64) - r_base).mul_(columns).add_(prediction.to(torch.int64) - p_base)
    return index.to(dtype)


def _sorted_counts(
    references: torch.Tensor, predictions: torch.Tensor, counts: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(references, predictions, counts) with each pair once and its counts summed, by sorting: any int64 values.

    Predictions must lie in [-1, MAX_PREDICTION].
    """
    references = references.to(torch.int64)
    low, high = _extent(references) if len(references) else (0, 0)
    key_limit = 1 << (63 - _PREDICTION_BITS)
    if -key_limit <= low and high < key_limit:  # one sort: reference * 2 ** 16 + prediction + 1 fits int64
        values, rank = None, references
    else:  # key by the reference's rank among its distinct values instead (one more sort)
        values, rank = torch.unique(references, return_inverse=True)
    keys = (rank << _PREDICTION_BITS) + (predictions.to(torch.int64) + 1)
    keys, inverse = torch.unique(keys, return_inverse=True)
    summed = torch.zeros(len(keys), dtype=torch.int64, device=keys.device).index_add_(0, inverse, counts)
    rank = keys >> _PREDICTION_BITS  # an arithmetic shift: floor division, right for negative references too
    return rank if values is None else values[rank], (keys & ((1 << _PREDICTION_BITS) - 1)) - 1, summed


__all__ = ["MAX_PREDICTION", "PairCounts", "evaluate_labels"]
