"""MeanIoU: evaluate's `mean_iou` metric, streamed through counts of (reference, prediction) pairs.

`evaluate.load("mean_iou")` fetches its script from the Hub, and it stores every prediction (as a
PNG in an Arrow cache) until `compute()` (huggingface/evaluate#559): 100 Cityscapes maps are 200 M
pixels. MeanIoU keeps only counts, on the device of the predictions, and returns the same keys and
numbers. It is used in one of two ways.

evaluate's way, `num_labels` and the other settings given at the end. Until then MeanIoU counts the raw
(reference value, prediction value) pairs (a few thousand numbers), and `compute()` applies evaluate's
settings to those values:

    metric = MeanIoU()
    for batch in loader:
        metric.add_batch(predictions=preds, references=labels)
    results = metric.compute(num_labels=19, ignore_index=255, reduce_labels=False)   # label_map=, nan_to_num= too

With `num_labels` fixed up front, the counts also read as a (K, K) confusion matrix (`metric.confusion`),
and per-sample matrices can be gathered across processes (`per_sample_confusion`, `add_confusion`):

    metric = MeanIoU(num_labels=19, id2label=config.id2label)
    for batch in loader:
        metric.update(model(batch["pixel_values"]).logits.argmax(1), batch["labels"])
    results = metric.compute()
    print(per_class_table(results, metric.id2label))

It also answers evaluate's one-shot call, without any cache:

    MeanIoU().compute(predictions=maps, references=labels, num_labels=150, ignore_index=255, reduce_labels=True)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import datasets
import evaluate
import numpy as np
import torch
import torch.nn.functional as F

from ..compat import NoMetricCache
from .confusion import (
    MAX_NUM_LABELS,
    Maps,
    MetricError,
    check_num_labels,
    confusion_matrix,
    metrics_from_confusion,
    paired_maps,
    per_sample_confusion,
)
from .pair_counts import PairCounts

_DESCRIPTION = """\
Mean Intersection-over-Union of semantic segmentation maps. Per class, IoU is the number of pixels
both predicted and labelled as the class, divided by the number of pixels predicted or labelled as
it; the mean is taken over the classes present in the predictions or the references. Pixels
labelled `ignore_index` are not counted. Same results as evaluate's `mean_iou`, accumulated in a
confusion matrix instead of a cache of every prediction.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: (H, W) integer maps (a sequence, sizes may differ) or a (B, H, W) batch.
    references: ground-truth maps, paired with `predictions`.
    num_labels (`int`): number of classes; defaults to the constructor's (required if it has none).
    ignore_index (`int`): reference value that is not counted; defaults to the constructor's (255).
    nan_to_num (`float`, *optional*): replace NaN results (classes absent from both) with this value.
    label_map (`dict`, *optional*): old -> new reference values, all looked up in the original map.
    reduce_labels (`bool`): reference 0 becomes 255 (ignored), every other value drops by 1
        (ADE20K's background); defaults to the constructor's.

Returns:
    mean_iou, mean_accuracy, overall_accuracy (`float`), per_category_iou and
    per_category_accuracy (`np.ndarray` of shape (num_labels,)).
"""

_CITATION = """\
@software{mmsegmentation2020,
  title = {{OpenMMLab Semantic Segmentation Toolbox and Benchmark}},
  author = {{MMSegmentation Contributors}},
  url = {https://github.com/open-mmlab/mmsegmentation},
  license = {Apache-2.0},
  year = {2020}
}
"""

_MAP = datasets.Sequence(datasets.Sequence(datasets.Value("int64")))  # one (H, W) map of class indices


class MeanIoU(NoMetricCache, evaluate.Metric):
    """Streaming mean IoU, with the results of evaluate's `mean_iou`.

    Args:
        num_labels: K, the number of classes; defaults to len(id2label). None defers it to
            `compute(num_labels=...)`, as in evaluate: `update` / `add_batch` then keep the raw values,
            and `compute()` takes num_labels, ignore_index, reduce_labels, label_map and nan_to_num.
        ignore_index: reference value whose pixels are not counted (None: count all). Without
            num_labels, this is only compute()'s default.
        reduce_labels: reference 0 becomes 255 (ignored) and other values drop by 1 (ADE20K's
            background). With num_labels it applies to every `update`; without, it is compute()'s
            default and applies, as in evaluate, to everything accumulated when compute() runs.
        id2label: class names, kept for `per_class_table(results, metric.id2label)`.

    Raises:
        MetricError: num_labels is not an int >= 1, or disagrees with len(id2label).
    """

    def __init__(
        self,
        num_labels: int | None = None,
        ignore_index: int | None = 255,
        reduce_labels: bool = False,
        id2label: Mapping[int, str] | None = None,
    ) -> None:
        if num_labels is None and id2label:
            num_labels = len(id2label)
        if num_labels is not None:
            num_labels = check_num_labels(num_labels, "MeanIoU")
        if id2label is not None and len(id2label) != num_labels:
            raise MetricError(f"MeanIoU: num_labels={num_labels} but id2label names {len(id2label)} classes")
        super().__init__()
        self.info.module_name = "mean_iou"  # evaluate would derive "mean_io_u" from the class name
        self.num_labels = num_labels
        self.ignore_index = ignore_index
        self.reduce_labels = reduce_labels
        self.id2label = dict(id2label) if id2label is not None else None
        self._device: torch.device | None = None  # of the first thing accumulated: all the state stays there
        self._pairs: PairCounts | None = None  # raw (reference, prediction) value pairs from update()
        self._added: torch.Tensor | None = None  # (K + 1, K + 1) int64 from add_confusion(), index K: outside [0, K)

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": _MAP, "references": _MAP}),
            reference_urls=[
                "https://huggingface.co/spaces/evaluate-metric/mean_iou",
                "https://github.com/huggingface/evaluate/issues/559",
            ],
        )

    @property
    def confusion(self) -> torch.Tensor | None:
        """The accumulated (K, K) confusion matrix (rows: reference, columns: prediction), or None before any update.

        Raises:
            MetricError: the metric was built without num_labels and holds counts (their matrix
                depends on compute()'s settings).
        """
        if self._device is None:
            return None
        if self.num_labels is None:
            raise MetricError(
                "MeanIoU.confusion: num_labels: expected an int >= 1 to build the matrix, found None; "
                "build the metric as MeanIoU(num_labels=...), or call compute(num_labels=...)"
            )
        return self._matrix()[: self.num_labels, : self.num_labels].contiguous()

    def update(self, predictions: Maps, references: Maps) -> None:
        """Count a (B, H, W) batch or a sequence of (H, W) maps; nothing else is kept.

        The counts live on the device of the first predictions (later maps are counted there). They
        keep every reference value as it is; predictions outside [0, K) are kept as one value below
        and one above (K: num_labels, or MAX_NUM_LABELS while it is unknown). The metric's settings
        are applied to the counts when they are read, which gives the same numbers.

        Raises:
            MetricError: the maps do not pair up (shapes named) or are not integer class indices.
        """
        pairs = paired_maps(predictions, references)
        if not pairs:
            return
        if self._pairs is None:
            self._device = self._device or pairs[0][0].device
            self._pairs = PairCounts(self._device)
        max_prediction = self.num_labels if self.num_labels is not None else MAX_NUM_LABELS
        for prediction, reference in pairs:
            self._pairs.count(prediction, reference, max_prediction)

    def per_sample_confusion(self, predictions: Maps, references: Maps) -> torch.Tensor:
        """One matrix per sample, with this metric's settings, for `accelerator.gather_for_metrics`.

        The references are treated as in `update()` (ignore_index, reduce_labels) and values outside
        [0, K) are kept in the outside bin, so `add_confusion(gathered)` adds exactly what `update()`
        would have. Nothing is accumulated here.

        Returns:
            A (B, K + 1, K + 1) int64 tensor on the predictions' device.

        Raises:
            MetricError: the metric has no num_labels, or the maps are refused as by `update()`.
        """
        num_labels = self._require_num_labels("per_sample_confusion", "to size the matrices")
        return per_sample_confusion(
            predictions,
            references,
            num_labels,
            ignore_index=self.ignore_index,
            outside_bin=True,
            reduce_labels=self.reduce_labels,
        )

    def add_confusion(self, matrix: torch.Tensor | np.ndarray) -> None:
        """Add a confusion matrix computed elsewhere, e.g. the gathered output of `per_sample_confusion`.

        Accepts (K, K) or (B, K, K), or the `outside_bin` layouts (K + 1, K + 1) and (B, K + 1, K + 1).

        Raises:
            MetricError: the metric has no num_labels, or the matrix has another shape or a non-integer dtype.
        """
        num_labels = self._require_num_labels("add_confusion", "to add a matrix")
        matrix = torch.as_tensor(matrix)
        square = matrix.shape[-2:]
        if matrix.ndim not in (2, 3) or square not in ((num_labels,) * 2, (num_labels + 1,) * 2):
            raise MetricError(
                f"add_confusion: expected a ({num_labels}, {num_labels}) or ({num_labels + 1}, {num_labels + 1}) "
                f"matrix, or a batch of them, for num_labels={num_labels}; found shape {tuple(matrix.shape)}"
            )
        if matrix.is_floating_point() or matrix.is_complex() or matrix.dtype == torch.bool:
            raise MetricError(f"add_confusion: expected integer counts, found dtype {matrix.dtype}")
        matrix = matrix.to(torch.int64)
        matrix = matrix.sum(0) if matrix.ndim == 3 else matrix
        matrix = F.pad(matrix, (0, 1, 0, 1)) if square[0] == num_labels else matrix
        if self._added is None:
            self._device = self._device or matrix.device
            self._added = torch.zeros_like(matrix, device=self._device)
        self._added += matrix.to(self._device)

    def reset(self) -> None:
        """Forget everything accumulated."""
        self._device, self._pairs, self._added = None, None, None

    def add_batch(self, *, predictions: Maps = None, references: Maps = None, **kwargs: Any) -> None:
        """evaluate's `add_batch`, streamed: the same as `update(predictions, references)`."""
        if kwargs:
            raise TypeError(f"MeanIoU.add_batch: unexpected arguments {sorted(kwargs)}")
        self.update(predictions, references)

    def add(self, *, prediction: Any = None, reference: Any = None, **kwargs: Any) -> None:
        """evaluate's `add`, streamed: the same as `update([prediction], [reference])`."""
        if kwargs:
            raise TypeError(f"MeanIoU.add: unexpected arguments {sorted(kwargs)}")
        self.update([prediction], [reference])

    def compute(self, *, predictions: Maps = None, references: Maps = None, **kwargs: Any) -> dict[str, Any]:
        """Mean IoU results, with evaluate's `mean_iou` keys and numbers.

        Without predictions: the results of everything accumulated so far (kept until `reset()`).
        If the metric was built with num_labels, of evaluate's arguments only `nan_to_num` applies,
        and num_labels / ignore_index / reduce_labels may be repeated only with the constructor's
        values. If it was built without, num_labels is required and all of evaluate's arguments
        apply (ignore_index and reduce_labels default to the constructor's), to all the maps.
        With predictions and references: the results of those alone (accumulated state is neither
        used nor changed), with evaluate's arguments, which default to the constructor's.

        Returns:
            mean_iou, mean_accuracy, overall_accuracy (np.float64), per_category_iou and
            per_category_accuracy (np.ndarray of shape (K,)). A class absent from both predictions
            and references is NaN, and left out of the means.

        Raises:
            MetricError: only one of predictions and references, nothing accumulated, num_labels
                missing, an argument that contradicts the accumulated state, or bad maps.
            TypeError: an argument evaluate's `mean_iou` does not take.
        """
        if predictions is None and references is None:
            if self.num_labels is None:
                return self._compute_deferred(**kwargs)
            return self._compute_accumulated(**kwargs)
        if predictions is None or references is None:
            missing = "predictions" if predictions is None else "references"
            raise MetricError(f"MeanIoU.compute: expected predictions and references together, found no {missing}")
        kwargs.setdefault("num_labels", self.num_labels)
        kwargs.setdefault("ignore_index", self.ignore_index)
        kwargs.setdefault("reduce_labels", self.reduce_labels)
        return self._compute(predictions=predictions, references=references, **kwargs)

    def _compute(
        self,
        predictions: Maps,
        references: Maps,
        num_labels: int,
        ignore_index: int | None,
        nan_to_num: float | None = None,
        label_map: Mapping[int, int] | None = None,
        reduce_labels: bool = False,
    ) -> dict[str, Any]:
        num_labels = check_num_labels(num_labels, "MeanIoU.compute")
        settings = {"label_map": label_map, "reduce_labels": reduce_labels}
        matrix = confusion_matrix(predictions, references, num_labels, ignore_index, outside_bin=True, **settings)
        return metrics_from_confusion(matrix, nan_to_num, outside_bin=True)

    def _compute_accumulated(
        self,
        nan_to_num: float | None = None,
        label_map: Mapping[int, int] | None = None,
        **settings: Any,
    ) -> dict[str, Any]:
        if label_map is not None:
            raise MetricError(
                "MeanIoU.compute: label_map applies only with predictions=..., or to a MeanIoU built without "
                "num_labels; this one was built with num_labels, and its update() does not remap"
            )
        for name, value in settings.items():
            if name not in ("num_labels", "ignore_index", "reduce_labels"):
                raise TypeError(f"MeanIoU.compute: unexpected argument {name!r}")
            if value != getattr(self, name):
                raise MetricError(
                    f"MeanIoU.compute: {name}={value!r}, but the accumulated state was built with "
                    f"{name}={getattr(self, name)!r}; pass predictions=... to compute on other settings"
                )
        if self._device is None:
            raise MetricError("MeanIoU.compute: nothing accumulated; call update() or add_confusion() first")
        return metrics_from_confusion(self._matrix(), nan_to_num, outside_bin=True)

    def _compute_deferred(self, **kwargs: Any) -> dict[str, Any]:
        # evaluate's settings, applied to the raw value pairs counted so far
        for name in kwargs:
            if name not in ("num_labels", "ignore_index", "nan_to_num", "label_map", "reduce_labels"):
                raise TypeError(f"MeanIoU.compute: unexpected argument {name!r}")
        if kwargs.get("num_labels") is None:
            raise MetricError(
                "MeanIoU.compute: num_labels: expected an int >= 1, found None; this MeanIoU was built without "
                "num_labels, so compute() needs it: compute(num_labels=...)"
            )
        num_labels = check_num_labels(kwargs["num_labels"], "MeanIoU.compute")
        if self._pairs is None:
            raise MetricError("MeanIoU.compute: nothing accumulated; call add_batch() or update() first")
        matrix = self._pairs.confusion(
            num_labels,
            kwargs.get("ignore_index", self.ignore_index),
            label_map=kwargs.get("label_map"),
            reduce_labels=kwargs.get("reduce_labels", self.reduce_labels),
        )
        return metrics_from_confusion(matrix, kwargs.get("nan_to_num"), outside_bin=True)

    def _matrix(self) -> torch.Tensor:
        """Everything accumulated, as one (K + 1, K + 1) matrix under the constructor's settings."""
        k = self.num_labels
        matrix = torch.zeros(k + 1, k + 1, dtype=torch.int64, device=self._device)
        if self._pairs is not None:
            matrix += self._pairs.confusion(k, self.ignore_index, reduce_labels=self.reduce_labels)
        if self._added is not None:
            matrix += self._added
        return matrix

    def _require_num_labels(self, method: str, purpose: str) -> int:
        if self.num_labels is None:
            raise MetricError(
                f"MeanIoU.{method}: num_labels: expected an int >= 1 {purpose}, found None; "
                "build the metric as MeanIoU(num_labels=...)"
            )
        return self.num_labels


def per_class_table(
    results: Mapping[str, Any], id2label: Mapping[int, str] | None = None, markdown: bool = False
) -> str:
    """Table of per-class IoU and accuracy (in %), then the means and overall accuracy: plain text for
    a terminal, or a Markdown table (`markdown=True`) for files and model cards.

    Classes are named by `id2label` (int or str keys, as in a config.json), else by index; a class
    absent from both predictions and references shows "-".

    Raises:
        MetricError: `results` lacks per_category_iou or per_category_accuracy, or their lengths differ.
    """
    missing = [key for key in ("per_category_iou", "per_category_accuracy") if key not in results]
    if missing:
        raise MetricError(f"per_class_table: expected MeanIoU results, found no {missing}")
    iou, accuracy = np.asarray(results["per_category_iou"]), np.asarray(results["per_category_accuracy"])
    if iou.shape != accuracy.shape:
        raise MetricError(
            f"per_class_table: per_category_iou {iou.shape} and per_category_accuracy {accuracy.shape} differ"
        )
    names = [_class_name(id2label, index) for index in range(len(iou))]
    if markdown:
        return _markdown_table(results, names, iou, accuracy)
    width = max(len(name) for name in [*names, "overall accuracy"])

    def row(name: str, iou_text: str, accuracy_text: str) -> str:
        return f"{name:<{width}}  {iou_text:>6}  {accuracy_text:>6}"

    rule = "-" * len(row("", "", ""))
    lines = [row("class", "IoU", "Acc"), rule]
    lines += [row(name, _percent(i), _percent(a)) for name, i, a in zip(names, iou, accuracy)]
    lines += [rule, row("mean", _percent(results.get("mean_iou")), _percent(results.get("mean_accuracy")))]
    lines += [row("overall accuracy", "", _percent(results.get("overall_accuracy")))]
    return "\n".join(lines)


def _markdown_table(results: Mapping[str, Any], names: list[str], iou: np.ndarray, accuracy: np.ndarray) -> str:
    lines = ["| class | IoU | Acc |", "|---|---:|---:|"]
    lines += [f"| {name} | {_percent(i)} | {_percent(a)} |" for name, i, a in zip(names, iou, accuracy)]
    lines += [f"| **mean** | **{_percent(results.get('mean_iou'))}** | **{_percent(results.get('mean_accuracy'))}** |"]
    lines += [f"| overall accuracy | | {_percent(results.get('overall_accuracy'))} |"]
    return "\n".join(lines)


def _class_name(id2label: Mapping[Any, str] | None, index: int) -> str:
    if not id2label:
        return str(index)
    return str(id2label.get(index, id2label.get(str(index), index)))


def _percent(value: Any) -> str:
    if value is None or math.isnan(value):
        return "-"
    return f"{100 * float(value):.2f}"


__all__ = ["MeanIoU", "per_class_table"]
