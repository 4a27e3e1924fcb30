"""Validate a dataset before training: every mask read once, a class histogram, every problem listed.

    segtune data check --recipe my_folder.yaml --set data.path=/data/mine      # the command that prints it

Problems are collected rather than raised (listing problems as under `data.skip_invalid`, then each
sample's): unpaired files, lossy masks, unreadable files, image/mask size mismatches, mask values
without a class. Images are checked from their header (size, readability) unless `decode_images`.
Each sample goes through `preflight.check_sample`, the same check `data.check: full` runs before training.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..errors import DatasetError
from ..recipe import Recipe
from .build import label_spec
from .labels import LabelSpec
from .preflight import scan
from .sources import load_source

_PROGRESS_EVERY = 500


@dataclass
class CheckReport:
    """What `check_dataset` found: pixels per class and split, and the problems."""

    labels: LabelSpec | None = None
    histograms: dict[str, np.ndarray] = field(default_factory=dict)  # split -> (num_labels + 1,), ignored last
    samples: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def format(self) -> str:
        """The histogram table (pixels per class, with names and shares) and the problems, as text."""
        lines = []
        if self.labels is not None and self.histograms:
            splits = list(self.histograms)
            lines.append(f"{'id':>4}  {'class':<24}" + "".join(f"{s + ' pixels':>20}{'share':>8}" for s in splits))
            names = [*self.labels.id2label.values(), f"(ignored: {self.labels.ignore_index})"]
            ids = [*map(str, self.labels.id2label), "-"]
            totals = {s: max(int(h.sum()), 1) for s, h in self.histograms.items()}
            for row, (class_id, name) in enumerate(zip(ids, names)):
                cells = "".join(
                    f"{int(self.histograms[s][row]):>20,}{self.histograms[s][row] / totals[s]:>8.1%}" for s in splits
                )
                lines.append(f"{class_id:>4}  {name[:24]:<24}{cells}")
            lines.append("samples: " + ", ".join(f"{s} {n}" for s, n in self.samples.items()))
        lines.append(f"{len(self.problems)} problem(s) found" + (":" if self.problems else ""))
        lines += [f"  {p}" for p in self.problems]
        return "\n".join(lines)


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
    for split in (recipe.data.train_split, recipe.data.eval_split):
        samples = source.splits[split]
        report.histograms[split] = np.zeros(report.labels.num_labels + 1, dtype=np.int64)
        report.samples[split] = total = len(samples)
        for index, (counts, problem) in enumerate(scan(samples, split, report.labels, "full", decode_images)):
            if problem is None:
                report.histograms[split] += counts
            else:
                report.problems.append(problem)
            if progress is not None and ((index + 1) % _PROGRESS_EVERY == 0 or index + 1 == total):
                progress(f"{split}: {index + 1}/{total} samples checked")
    return report
