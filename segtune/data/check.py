"""Validate a dataset before training: every mask read once, a class histogram, every problem listed.

    python -m segtune.data check --recipe my_folder.yaml --set data.path=/data/mine

Problems are collected rather than raised (listing problems as under `data.skip_invalid`, then each
sample's): unpaired files, lossy masks, unreadable files, image/mask size mismatches, mask values
without a class. Images are checked from their header (size, readability) unless `decode_images`.
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

import datasets
import numpy as np

from ..errors import DatasetError
from ..recipe import Recipe
from .build import label_spec
from .decode import check_same_size, describe, image_size, read_image, read_mask
from .labels import LabelSpec
from .sources import IMAGE, LABEL, load_source


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
    """Read every mask of the recipe's train and eval splits once; collect the histogram and the problems."""
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
        stored = source.splits[split].cast_column(IMAGE, datasets.Image(decode=False))
        stored = stored.cast_column(LABEL, datasets.Image(decode=False))
        report.histograms[split] = np.zeros(report.labels.num_labels + 1, dtype=np.int64)
        report.samples[split] = len(stored)
        for index, row in enumerate(stored):
            try:
                report.histograms[split] += _check_sample(row, report.labels, decode_images)
            except DatasetError as error:
                report.problems.append(f"{split} sample {index}: {error}")
            if progress is not None and (index + 1) % 500 == 0:
                progress(f"{split}: {index + 1}/{len(stored)} samples checked")
    return report


def _check_sample(row: dict, labels: LabelSpec, decode_images: bool) -> np.ndarray:
    image_name, mask_name = describe(row[IMAGE], "image"), describe(row[LABEL], "mask")
    if decode_images:
        size = tuple(read_image(row[IMAGE], image_name).shape[-2:])
    else:
        size = image_size(row[IMAGE], image_name)
    raw = read_mask(row[LABEL], mask_name)
    check_same_size(size, raw.shape, image_name, mask_name)
    return labels.class_counts(raw, mask_name)


def main(argv: list[str] | None = None) -> int:
    """`python -m segtune.data check`: print the report; exit 1 when problems were found, 2 on a bad recipe."""
    import argparse

    from ..errors import RecipeError
    from ..recipe import load_recipe

    parser = argparse.ArgumentParser(prog="python -m segtune.data", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("check", help="validate a dataset: class histogram and problems")
    check.add_argument("--recipe", default=None, help="recipe file or shipped recipe name (default: the defaults)")
    check.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="dotted recipe overrides")
    check.add_argument("--decode-images", action="store_true", help="decode every image fully, not just its header")
    args = parser.parse_args(argv)
    try:
        recipe = load_recipe(args.recipe, args.set)
    except RecipeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    report = check_dataset(recipe, args.decode_images, progress=lambda line: print(line, file=sys.stderr))
    print(report.format())
    return 0 if report.ok else 1
