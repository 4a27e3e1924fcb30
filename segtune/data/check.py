"""Validate a dataset before training: every mask read once, a class table, the diagnosis, every problem listed.

    segtune data check --recipe my_folder.yaml --set data.path=/data/mine      # the command that prints it

Problems are collected rather than raised (listing problems as under `data.skip_invalid`, then the
diagnosis' recognised mistakes with their fixes, then each sample's): unpaired files, lossy masks,
unreadable files, image/mask size mismatches, colour masks, scaled or 0/255 binary masks, mask values
without a class. Images are checked from their header (size, readability) unless `decode_images`.
Each split goes through `preflight.inspect` and `diagnosis.diagnose`, the check `data.check: full` runs
before training; the class table adds each class's pixels, share and images per split.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field

import datasets
import numpy as np

from ..errors import DatasetError
from ..recipe import Recipe
from .diagnosis import diagnose
from .labels import LabelSpec, label_spec
from .mask_values import MaskValues
from .preflight import inspect, problems_of
from .sources import load_source

_PROGRESS_EVERY = 500


@dataclass
class CheckReport:
    """What `check_dataset` found: pixels and images per class and split, the problems and the warnings."""

    labels: LabelSpec | None = None
    histograms: dict[str, np.ndarray] = field(default_factory=dict)  # split -> (num_labels + 1,), ignored last
    images: dict[str, np.ndarray] = field(default_factory=dict)  # split -> (num_labels,) masks each class is in
    samples: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def format(self) -> str:
        """The class table (pixels per class with names and shares, and images, per split), the warnings and the
        problems, as text."""
        lines = self._table() if self.labels is not None and self.histograms else []
        if self.warnings:
            lines.append(f"{len(self.warnings)} warning(s):")
            lines += [f"  {w}" for w in self.warnings]
        lines.append(f"{len(self.problems)} problem(s) found" + (":" if self.problems else ""))
        lines += [f"  {p}" for p in self.problems]
        return "\n".join(lines)

    def _table(self) -> list[str]:
        splits = list(self.histograms)
        header = "".join(f"{s + ' pixels':>20}{'share':>8}{'images':>8}" for s in splits)
        lines = [f"{'id':>4}  {'class':<24}" + header]
        names = [*self.labels.id2label.values(), f"(ignored: {self.labels.ignore_index})"]
        ids = [*map(str, self.labels.id2label), "-"]
        totals = {s: max(int(h.sum()), 1) for s, h in self.histograms.items()}
        for row, (class_id, name) in enumerate(zip(ids, names)):
            cells = ""
            for s in splits:
                images = f"{int(self.images[s][row]):,}" if row < self.labels.num_labels else ""
                cells += f"{int(self.histograms[s][row]):>20,}{self.histograms[s][row] / totals[s]:>8.1%}{images:>8}"
            lines.append(f"{class_id:>4}  {name[:24]:<24}{cells}".rstrip())
        lines.append("samples: " + ", ".join(f"{s} {n}" for s, n in self.samples.items()))
        return lines


def check_dataset(
    recipe: Recipe, decode_images: bool = False, progress: Callable[[str], None] | None = None
) -> CheckReport:
    """Read every mask of the recipe's train and eval splits once; collect the histogram and the problems.

    `progress` receives a line every 500 samples and at the end of each split ("train: 512/512 samples checked").
    """
    recipe = copy.deepcopy(recipe)
    recipe.data.skip_invalid = True  # collect listing problems instead of stopping at the first
    report = CheckReport()
    try:
        source = load_source(recipe)
        report.labels = label_spec(recipe.data, source)
    except DatasetError as error:
        report.problems.append(str(error))
        return report
    report.problems += source.skipped
    values: dict[str, MaskValues] = {}
    for split in (recipe.data.train_split, recipe.data.eval_split):
        values[split] = _inspect(source.splits[split], split, report.labels, decode_images, progress)
        report.histograms[split] = np.append(values[split].class_pixels(), values[split].ignored_pixels())
        report.images[split] = values[split].class_masks
        report.samples[split] = values[split].samples
    found = diagnose(values, report.labels, recipe.data.train_split, recipe.data.eval_split)
    report.problems += problems_of(values, found)
    report.warnings = found.warnings
    return report


def _inspect(
    samples: datasets.Dataset,
    split: str,
    labels: LabelSpec,
    decode_images: bool,
    progress: Callable[[str], None] | None,
) -> MaskValues:
    """Every sample of a split read at `full`, with a progress line every 500 samples and at the end."""
    total = len(samples)

    def tell(done: int) -> None:
        if progress is not None and (done % _PROGRESS_EVERY == 0 or done == total):
            progress(f"{split}: {done}/{total} samples checked")

    return inspect(samples, split, labels, "full", seed=0, decode_images=decode_images, progress=tell)
