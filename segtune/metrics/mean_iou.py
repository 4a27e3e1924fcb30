"""MeanIoU: evaluate's `mean_iou` metric, streamed through a confusion matrix.

`evaluate.load("mean_iou")` fetches its script from the Hub, and it stores every prediction (as a
PNG in an Arrow cache) until `compute()` (huggingface/evaluate#559): 100 Cityscapes maps are 200 M
pixels. MeanIoU keeps one int64 (K + 1, K + 1) confusion matrix on the device of the predictions
instead, and returns the same keys and numbers.

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
import os
from collections.abc import Mapping
from typing import Any

import datasets
import evaluate
import numpy as np
import torch
import torch.nn.functional as F

from .confusion import (
    Maps,
    MetricError,
    check_num_labels,
    confusion_matrix,
    metrics_from_confusion,
    paired_maps,
    per_sample_confusion,
)

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
    num_labels (`int`): number of classes; defaults to the constructor's.
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


class MeanIoU(evaluate.Metric):
    """Streaming mean IoU, with the results of evaluate's `mean_iou`.

    Args:
        num_labels: K, the number of classes. Needed to accumulate; a one-shot
            `compute(predictions=..., num_labels=...)` may pass it instead. Defaults to len(id2label).
        ignore_index: reference value whose pixels are not counted (None: count all).
        reduce_labels: in `update`, reference 0 becomes 255 (ignored) and other values drop by 1.
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
        self._confusion: torch.Tensor | None = None  # (K + 1, K + 1) int64, index K: outside [0, K)

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

    def _build_data_dir(self) -> str:
        # evaluate creates its Arrow cache folder here; MeanIoU never writes one, so it creates nothing
        return os.path.join(self._data_dir_root, self.name, self.config_name)

    @property
    def confusion(self) -> torch.Tensor | None:
        """The accumulated (K, K) confusion matrix (rows: reference, columns: prediction), or None before any update."""
        if self._confusion is None:
            return None
        return self._confusion[: self.num_labels, : self.num_labels].clone()

    def update(self, predictions: Maps, references: Maps) -> None:
        """Add a (B, H, W) batch or a sequence of (H, W) maps to the confusion matrix; nothing else is kept.

        The matrix lives on the device of the first predictions (later ones are added there).

        Raises:
            MetricError: the metric has no num_labels, or the maps do not pair up (shapes named).
        """
        num_labels = self._require_num_labels("update")
        for prediction, reference in self._prepared(predictions, references):
            self._accumulate(confusion_matrix(prediction, reference, num_labels, self.ignore_index, outside_bin=True))

    def per_sample_confusion(self, predictions: Maps, references: Maps) -> torch.Tensor:
        """One matrix per sample, with this metric's settings, for `accelerator.gather_for_metrics`.

        The references are treated as in `update()` (ignore_index, reduce_labels) and values outside
        [0, K) are kept in the outside bin, so `add_confusion(gathered)` adds exactly what `update()`
        would have. Nothing is accumulated here.

        Returns:
            A (B, K + 1, K + 1) int64 tensor on the predictions' device.

        Raises:
            MetricError: as `update()`.
        """
        num_labels = self._require_num_labels("per_sample_confusion")
        matrices = [
            per_sample_confusion(prediction, reference, num_labels, self.ignore_index, outside_bin=True)
            for prediction, reference in self._prepared(predictions, references)
        ]
        if not matrices:
            return torch.zeros(0, num_labels + 1, num_labels + 1, dtype=torch.int64)
        return torch.cat([m.to(matrices[0].device) for m in matrices])

    def add_confusion(self, matrix: torch.Tensor | np.ndarray) -> None:
        """Add a confusion matrix computed elsewhere, e.g. the gathered output of `per_sample_confusion`.

        Accepts (K, K) or (B, K, K), or the `outside_bin` layouts (K + 1, K + 1) and (B, K + 1, K + 1).

        Raises:
            MetricError: the metric has no num_labels, or the matrix has another shape or a non-integer dtype.
        """
        num_labels = self._require_num_labels("add_confusion")
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
        self._accumulate(F.pad(matrix, (0, 1, 0, 1)) if square[0] == num_labels else matrix)

    def reset(self) -> None:
        """Forget everything accumulated."""
        self._confusion = None

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

        Without predictions: the results of everything accumulated so far (kept until `reset()`);
        of evaluate's arguments only `nan_to_num` applies, and num_labels / ignore_index /
        reduce_labels may be repeated only with the constructor's values.
        With predictions and references: the results of those alone (accumulated state is neither
        used nor changed), with evaluate's arguments, which default to the constructor's.

        Returns:
            mean_iou, mean_accuracy, overall_accuracy (np.float64), per_category_iou and
            per_category_accuracy (np.ndarray of shape (K,)). A class absent from both predictions
            and references is NaN, and left out of the means.

        Raises:
            MetricError: only one of predictions and references, nothing accumulated, num_labels
                missing, an argument that contradicts the accumulated state, or bad maps.
        """
        if predictions is None and references is None:
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
        pairs = paired_maps(predictions, references)
        total = torch.zeros(num_labels + 1, num_labels + 1, dtype=torch.int64)
        for prediction, reference in pairs:
            reference = _remap(reference, label_map) if label_map is not None else reference
            reference = _reduce_labels(reference) if reduce_labels else reference
            total += confusion_matrix(prediction, reference, num_labels, ignore_index, outside_bin=True).cpu()
        return metrics_from_confusion(total, nan_to_num, outside_bin=True)

    def _compute_accumulated(
        self,
        nan_to_num: float | None = None,
        label_map: Mapping[int, int] | None = None,
        **settings: Any,
    ) -> dict[str, Any]:
        if label_map is not None:
            raise MetricError("MeanIoU.compute: label_map applies only with predictions=...; update() does not remap")
        for name, value in settings.items():
            if name not in ("num_labels", "ignore_index", "reduce_labels"):
                raise TypeError(f"MeanIoU.compute: unexpected argument {name!r}")
            if value != getattr(self, name):
                raise MetricError(
                    f"MeanIoU.compute: {name}={value!r}, but the accumulated state was built with "
                    f"{name}={getattr(self, name)!r}; pass predictions=... to compute on other settings"
                )
        if self._confusion is None:
            raise MetricError("MeanIoU.compute: nothing accumulated; call update() or add_confusion() first")
        return metrics_from_confusion(self._confusion, nan_to_num, outside_bin=True)

    def _require_num_labels(self, method: str) -> int:
        if self.num_labels is None:
            raise MetricError(
                f"MeanIoU.{method}: num_labels: expected an int >= 1 to accumulate, found None; "
                "build the metric as MeanIoU(num_labels=...)"
            )
        return self.num_labels

    def _prepared(self, predictions: Maps, references: Maps) -> list[tuple[torch.Tensor, torch.Tensor]]:
        pairs = paired_maps(predictions, references)
        return [(p, _reduce_labels(r)) for p, r in pairs] if self.reduce_labels else pairs

    def _accumulate(self, matrix: torch.Tensor) -> None:
        if self._confusion is None:
            self._confusion = matrix.clone()
        else:
            self._confusion += matrix.to(self._confusion.device)


def _widened(reference: torch.Tensor) -> torch.Tensor:
    # at least int32, so that 255 and remapped values fit whatever the map's dtype
    return reference.to(torch.promote_types(reference.dtype, torch.int32))


def _reduce_labels(reference: torch.Tensor) -> torch.Tensor:
    """evaluate's `reduce_labels`: 0 becomes 255, every value drops by 1, and 254 (from 255) goes back to 255."""
    reduced = torch.where(reference == 0, 255, _widened(reference)) - 1
    return reduced.masked_fill_(reduced == 254, 255)


def _remap(reference: torch.Tensor, label_map: Mapping[int, int]) -> torch.Tensor:
    """evaluate's `label_map`: every old value is looked up in the original map, so chains do not compound."""
    original = reference.to(torch.int64)  # int64: any key or new value compares and fits exactly
    remapped = original.clone()
    for old, new in label_map.items():
        remapped.masked_fill_(original == old, new)
    return remapped


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
