"""MeanIoU: evaluate's `mean_iou` metric (Mean Intersection-over-Union), streamed through counts.

`evaluate.load("mean_iou")` stores every map (as a PNG in an Arrow cache) until `compute()` (evaluate#559).
MeanIoU keeps only counts, on the device of the predictions, and returns the same keys and numbers. As evaluate,
with the settings given at the end (until then it counts raw value pairs), or with `num_labels` up front, which
folds each batch into a matrix (`metric.confusion`) and lets per-sample matrices be gathered across processes:

    metric = MeanIoU()                              # or MeanIoU(num_labels=19, id2label=config.id2label)
    for batch in loader:
        metric.add_batch(predictions=preds, references=labels)   # or metric.update(preds, labels)
    results = metric.compute(num_labels=19, ignore_index=255)     # label_map=, reduce_labels=, nan_to_num= too
    MeanIoU().compute(predictions=maps, references=labels, num_labels=150, reduce_labels=True)  # one shot
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import datasets
import evaluate
import numpy as np
import torch
import torch.nn.functional as F

from ..compat import NoMetricCache
from .confusion import (
    Maps,
    MetricError,
    PairCounts,
    check_num_labels,
    metrics_from_confusion,
    paired_maps,
    pairs_confusion,
    per_sample_confusion,
)

_CITATION = """@software{mmsegmentation2020, title = {{OpenMMLab Semantic Segmentation Toolbox and Benchmark}},
author = {{MMSegmentation Contributors}}, url = {https://github.com/open-mmlab/mmsegmentation}, year = {2020}}"""
_EVALUATE_URL = "https://huggingface.co/spaces/evaluate-metric/mean_iou"
_MAP = datasets.Sequence(datasets.Sequence(datasets.Value("int64")))  # one (H, W) map of class indices
_BUILD = "; build the metric as MeanIoU(num_labels=...)"
_BUILD_OR_COMPUTE = f"{_BUILD}, or call compute(num_labels=...)"
_DEFERRED = "; this MeanIoU was built without num_labels, so compute() needs it: compute(num_labels=...)"
_SETTINGS = ("num_labels", "ignore_index", "nan_to_num", "label_map", "reduce_labels")  # evaluate's compute()


class MeanIoU(NoMetricCache, evaluate.Metric):
    """Streaming mean IoU, with the results of evaluate's `mean_iou`.

    `num_labels` (K) defaults to len(id2label); None defers it, and every other setting, to `compute()`, as
    evaluate does. `ignore_index` (None: count all) and `reduce_labels` apply to every update of a metric with
    num_labels, and are compute()'s defaults for one without. `id2label` names the classes for `per_class_table`.
    Raises MetricError if num_labels is not an int >= 1, or disagrees with len(id2label)."""

    def __init__(
        self,
        num_labels: int | None = None,
        ignore_index: int | None = 255,
        reduce_labels: bool = False,
        id2label: Mapping[int, str] | None = None,
    ) -> None:
        num_labels = len(id2label) if num_labels is None and id2label else num_labels
        num_labels = None if num_labels is None else check_num_labels(num_labels, "MeanIoU")
        if id2label is not None and len(id2label) != num_labels:
            raise MetricError(f"MeanIoU: num_labels={num_labels} but id2label names {len(id2label)} classes")
        super().__init__()
        self.info.module_name = "mean_iou"  # evaluate would derive "mean_io_u" from the class name
        self.num_labels, self.ignore_index, self.reduce_labels = num_labels, ignore_index, reduce_labels
        self.id2label = dict(id2label) if id2label is not None else None
        self._matrix: torch.Tensor | None = None  # with num_labels: (K + 1, K + 1), index K outside [0, K)
        self._pairs: PairCounts | None = None  # without: the raw (reference, prediction) value pairs

    def _info(self) -> evaluate.MetricInfo:
        features, urls = datasets.Features(predictions=_MAP, references=_MAP), [_EVALUATE_URL]
        return evaluate.MetricInfo(__doc__, _CITATION, features, self.compute.__doc__, reference_urls=urls)

    @property
    def confusion(self) -> torch.Tensor | None:
        """The accumulated (K, K) matrix (rows: reference, columns: prediction), or None before any update.
        Raises MetricError without num_labels: the matrix of raw counts depends on compute()'s settings."""
        if self._matrix is None and self._pairs is None:
            return None
        k = check_num_labels(self.num_labels, "MeanIoU.confusion", " to build the matrix", _BUILD_OR_COMPUTE)
        return self._matrix[:k, :k].contiguous()

    def update(self, predictions: Maps, references: Maps) -> None:
        """Count a (B, H, W) batch or (H, W) maps on the device of the first predictions: folded into the matrix
        under the metric's settings, or without num_labels, as raw pairs. Raises MetricError for bad maps."""
        pairs = paired_maps(predictions, references)
        if pairs and self.num_labels is not None:
            self._add(pairs_confusion(pairs, self.num_labels, self.ignore_index, None, self.reduce_labels))
        elif pairs:
            self._pairs = self._pairs or PairCounts(pairs[0][0].device)
            for prediction, reference in pairs:
                self._pairs.count(prediction, reference)

    def per_sample_confusion(self, predictions: Maps, references: Maps) -> torch.Tensor:
        """A (B, K + 1, K + 1) int64 matrix per sample under the metric's settings, for `gather_for_metrics`:
        `add_confusion(gathered)` then adds what `update()` would. Raises MetricError as it, or without num_labels.
        """
        k = check_num_labels(self.num_labels, "MeanIoU.per_sample_confusion", " to size the matrices", _BUILD)
        settings = {"ignore_index": self.ignore_index, "reduce_labels": self.reduce_labels, "outside_bin": True}
        return per_sample_confusion(predictions, references, k, **settings)

    def add_confusion(self, matrix: torch.Tensor | np.ndarray) -> None:
        """Add a (K, K) or (K + 1, K + 1) (`outside_bin`) matrix, or a batch of them (gathered per-sample ones).
        Raises MetricError without num_labels, or for another shape or a non-integer dtype."""
        k = check_num_labels(self.num_labels, "MeanIoU.add_confusion", " to add a matrix", _BUILD)
        matrix = torch.as_tensor(matrix)
        square = matrix.shape[-2:]
        if matrix.ndim not in (2, 3) or square not in ((k, k), (k + 1, k + 1)):
            raise MetricError(
                f"add_confusion: expected a ({k}, {k}) or ({k + 1}, {k + 1}) matrix, or a batch of them, "
                f"for num_labels={k}; found shape {tuple(matrix.shape)}"
            )
        if matrix.is_floating_point() or matrix.is_complex() or matrix.dtype == torch.bool:
            raise MetricError(f"add_confusion: expected integer counts, found dtype {matrix.dtype}")
        matrix = matrix.to(torch.int64).sum(0) if matrix.ndim == 3 else matrix.to(torch.int64)
        self._add(F.pad(matrix, (0, 1, 0, 1)) if square[0] == k else matrix)

    def reset(self) -> None:
        """Forget everything accumulated."""
        self._matrix, self._pairs = None, None

    def add_batch(self, *, predictions: Maps = None, references: Maps = None) -> None:
        """evaluate's `add_batch`, streamed: `update(predictions, references)`."""
        self.update(predictions, references)

    def add(self, *, prediction: Any = None, reference: Any = None) -> None:
        """evaluate's `add`, streamed: `update([prediction], [reference])`."""
        self.update([prediction], [reference])

    def compute(self, *, predictions: Maps = None, references: Maps = None, **kwargs: Any) -> dict[str, Any]:
        """evaluate's `mean_iou` results (see `metrics_from_confusion`): of everything accumulated (kept until
        `reset()`), or of `predictions` and `references` alone ((H, W) maps, sizes may differ, or (B, H, W)).

        `num_labels` is required if the metric has none; one built with it folded its counts already, so
        num_labels, ignore_index and reduce_labels may only repeat its own. Else `ignore_index` (the reference not
        counted) and `reduce_labels` (reference 0 becomes 255 and the others drop by 1: ADE20K's background)
        default to the constructor's; `label_map` maps old -> new references, each looked up in the original map;
        `nan_to_num` replaces NaN results (classes absent from both maps).

        Raises MetricError for bad maps, only one of them, nothing accumulated, no num_labels, or a setting that
        contradicts the accumulated state; TypeError for an argument evaluate's `mean_iou` does not take.
        """
        if (predictions is None) != (references is None):
            missing = "predictions" if predictions is None else "references"
            raise MetricError(f"MeanIoU.compute: expected predictions and references together, found no {missing}")
        unexpected = sorted(set(kwargs) - set(_SETTINGS))
        if unexpected:
            raise TypeError(f"MeanIoU.compute: unexpected argument {unexpected[0]!r}")
        nan_to_num = kwargs.pop("nan_to_num", None)
        if predictions is None and self.num_labels is not None:
            return metrics_from_confusion(self._accumulated(**kwargs), nan_to_num, outside_bin=True)
        fix = "" if self.num_labels else _DEFERRED
        k = check_num_labels(kwargs.get("num_labels", self.num_labels), "MeanIoU.compute", "", fix)
        settings = (kwargs.get("ignore_index", self.ignore_index), kwargs.get("label_map"))
        settings += (kwargs.get("reduce_labels", self.reduce_labels),)
        if predictions is not None:
            matrix = pairs_confusion(paired_maps(predictions, references), k, *settings)
        elif self._pairs is None:
            raise MetricError("MeanIoU.compute: nothing accumulated; call add_batch() or update() first")
        else:
            matrix = self._pairs.confusion(k, *settings)
        return metrics_from_confusion(matrix, nan_to_num, outside_bin=True)

    def _accumulated(self, label_map: Mapping[int, int] | None = None, **settings: Any) -> torch.Tensor:
        if label_map is not None:
            raise MetricError(
                "MeanIoU.compute: label_map applies only with predictions=..., or to a MeanIoU built without "
                "num_labels; this one was built with num_labels, and its update() does not remap"
            )
        for name, value in settings.items():
            if value != getattr(self, name):
                raise MetricError(
                    f"MeanIoU.compute: {name}={value!r}, but the accumulated state was built with "
                    f"{name}={getattr(self, name)!r}; pass predictions=... to compute on other settings"
                )
        if self._matrix is None:
            raise MetricError("MeanIoU.compute: nothing accumulated; call update() or add_confusion() first")
        return self._matrix

    def _add(self, matrix: torch.Tensor) -> None:  # kept on the device of the first matrix
        self._matrix = matrix.clone() if self._matrix is None else self._matrix + matrix.to(self._matrix.device)


def per_class_table(
    results: Mapping[str, Any], id2label: Mapping[int, str] | None = None, markdown: bool = False
) -> str:
    """Per-class IoU and accuracy (in %), then the means and overall accuracy, as plain text or Markdown; classes
    are named by `id2label` (int or str keys, as in a config.json), else by index, and one absent from both maps
    shows "-". Raises MetricError for results without both per-class arrays, of one length."""
    missing = [key for key in ("per_category_iou", "per_category_accuracy") if key not in results]
    if missing:
        raise MetricError(f"per_class_table: expected MeanIoU results, found no {missing}")
    iou, accuracy = np.asarray(results["per_category_iou"]), np.asarray(results["per_category_accuracy"])
    if iou.shape != accuracy.shape:
        raise MetricError(
            f"per_class_table: per_category_iou {iou.shape} and per_category_accuracy {accuracy.shape} differ"
        )
    names = [str(id2label.get(i, id2label.get(str(i), i))) if id2label else str(i) for i in range(len(iou))]
    rows = [(name, _percent(i), _percent(a)) for name, i, a in zip(names, iou, accuracy)]
    mean = ("mean", _percent(results.get("mean_iou")), _percent(results.get("mean_accuracy")))
    overall = ("overall accuracy", "", _percent(results.get("overall_accuracy")))
    if markdown:
        lines = ["| class | IoU | Acc |", "|---|---:|---:|", *(f"| {n} | {i} | {a} |" for n, i, a in rows)]
        return "\n".join([*lines, "| **{}** | **{}** | **{}** |".format(*mean), f"| {overall[0]} | | {overall[2]} |"])
    width = max(len(name) for name in [*names, overall[0]])
    lines = [f"{n:<{width}}  {i:>6}  {a:>6}" for n, i, a in [("class", "IoU", "Acc"), *rows, mean, overall]]
    return "\n".join([lines[0], "-" * len(lines[0]), *lines[1:-2], "-" * len(lines[0]), *lines[-2:]])


def _percent(value: Any) -> str:
    return "-" if value is None or np.isnan(value) else f"{100 * float(value):.2f}"
