"""What the mask values say about the label contract: the mistakes recognised, each with the recipe line that
fixes it, and what is probably not meant.

    found = diagnose({"train": train_values, "validation": eval_values}, labels, "train", "validation")
    found.errors     # stop the run: colour masks, 0/255 binary masks, ids scaled for visibility
    found.warnings   # a class never in training, a trained class never evaluated, a split mostly ignored

Errors (one line each, naming files, what was expected and what was found):
- colour masks (RGB/RGBA) -> `data.colors: {"#rrggbb": id, ...}` listing the colours found;
- masks holding only 0 and the ignore index with 2 classes (the foreground saved as 255) -> `data.label_map: {255: 1}`;
- values without a class that are all multiples of one step k > 1, with max / k < num_labels (ids scaled for
  visibility: 0, 85, 170, 255 for 4 classes) -> the `data.label_map` that divides them by k.
Other values without a class stay per-sample problems (`MaskValues.problems`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from ..errors import joined, listing
from .labels import INVALID, LabelSpec
from .mask_values import MaskValues

# More than this share of a split's pixels ignored is warned about.
IGNORED_SHARE = 0.5
_COLOURS_LISTED = 20


@dataclass
class Diagnosis:
    """`errors` stop a run (one line each, with the fix); `warnings` are printed and the run goes on."""

    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def diagnose(values: Mapping[str, MaskValues], labels: LabelSpec, train_split: str, eval_split: str) -> Diagnosis:
    """The recognised mistakes and the warnings for the masks tallied in `values` (split name -> tallies)."""
    found = Diagnosis()
    colour = _colour_masks(values)
    contract = _binary_foreground(values, labels) or _scaled_ids(values, labels)
    found.errors += [line for line in (colour, contract) if line]
    if found.errors:
        return found
    found.warnings += _absent_classes(values, labels, train_split, eval_split)
    found.warnings += [line for v in values.values() if (line := _mostly_ignored(v))]
    return found


def _files(names: list[str], count: int) -> str:
    return joined(names, count, most=3)


def _colour_masks(values: Mapping[str, MaskValues]) -> str | None:
    files = [name for v in values.values() for name in v.colour_files]
    if not files:
        return None
    colours: dict[int, int] = {}
    for v in values.values():
        for colour, pixels in v.colours.items():
            colours[colour] = colours.get(colour, 0) + pixels
    listed = sorted(colours)[:_COLOURS_LISTED]
    mapping = ", ".join(f'"#{c:06x}": {i}' for i, c in enumerate(listed))
    more = f" (and {len(colours) - len(listed)} more colours)" if len(colours) > len(listed) else ""
    decoded = sum(v.masks for v in values.values()) + len(files)
    return (
        f"{len(files)} of {decoded} masks checked are colour images ({_files(files, len(files))}), found "
        f"{len(colours)} colours; expected one channel of class ids. Map each colour to its class id with "
        f"data.colors: {{{mapping}}}{more}"
    )


def _plain(labels: LabelSpec) -> bool:
    """Masks meant to hold class ids as they are: no source mapping, no reduction, no recipe label_map yet, and
    no colours (their ids were given colour by colour: a colour mapped to the ignore index is meant)."""
    return labels.label_map is None and not labels.reduce_labels and not labels.overrides and labels.colors is None


def _present(values: Mapping[str, MaskValues]) -> np.ndarray:
    return np.flatnonzero(sum(v.pixels for v in values.values()))


def _examples(values: Mapping[str, MaskValues], raw: int) -> tuple[list[str], int]:
    files = [name for v in values.values() for name in v.examples.get(raw, [])]
    return files, int(sum(v.masks_with[raw] for v in values.values()))


def _binary_foreground(values: Mapping[str, MaskValues], labels: LabelSpec) -> str | None:
    """Two classes, and masks holding only 0 and the ignore index: the foreground was saved as the ignore value."""
    ignore = labels.ignore_index
    if labels.num_labels != 2 or not _plain(labels) or _present(values).tolist() != [0, ignore]:
        return None
    files, count = _examples(values, ignore)
    return (
        f"with 2 classes, {count} masks ({_files(files, count)}) hold only 0 and {ignore}, the ignore index: class 1 "
        f"never occurs and the foreground would never be learned; expected 0 and 1. If {ignore} is the foreground, "
        f"set data.label_map: {{{ignore}: 1}}"
    )


def _scaled_ids(values: Mapping[str, MaskValues], labels: LabelSpec) -> str | None:
    """Values without a class that are all multiples of a step k > 1 with max / k < num_labels."""
    present = _present(values)
    invalid = present[labels.lut[present] == INVALID]
    if not invalid.size or not _plain(labels):
        return None
    nonzero = [int(v) for v in present if v]
    for candidate in (nonzero, [v for v in nonzero if v != labels.ignore_index]):
        step = math.gcd(*candidate) if candidate else 1
        if step > 1 and max(candidate) // step < labels.num_labels and set(invalid.tolist()) <= set(candidate):
            mapping = {v: v // step for v in candidate}
            files, count = _examples(values, int(invalid[0]))
            return (
                f"mask values {listing(present.tolist(), inline=True)} in {count} masks ({_files(files, count)}) are "
                f"multiples of {step} below {labels.num_labels} x {step}: class ids scaled for visibility; expected "
                f"{labels.valid_raw_values()}. To undo the scaling, set data.label_map: {mapping}"
            )
    return None


def _classes(labels: LabelSpec, ids: np.ndarray) -> str:
    """ "class 2 'car'" or "classes 2 'car', 5 'bus'" (up to MAX_LISTED, then how many more)."""
    named = [f"{i} {labels.id2label[i]!r}" for i in ids.tolist()]
    return ("class " if len(named) == 1 else "classes ") + joined(named)


def _checked(v: MaskValues) -> str:
    if v.masks == v.samples:
        return f"the {v.masks} {v.split} masks"
    return f"the {v.masks} {v.split} masks checked (a seeded sample of {v.samples}; data.check=full reads all)"


def _absent_classes(
    values: Mapping[str, MaskValues], labels: LabelSpec, train_split: str, eval_split: str
) -> list[str]:
    train, evaluation = values.get(train_split), values.get(eval_split)
    warnings = []
    if train is not None and train.masks:
        absent = np.flatnonzero(train.class_pixels() == 0)
        if absent.size:
            verb = "occurs" if absent.size == 1 else "occur"
            warnings.append(f"{_classes(labels, absent)} never {verb} in {_checked(train)}")
        if evaluation is not None and evaluation.masks:
            unseen = np.flatnonzero((train.class_pixels() > 0) & (evaluation.class_pixels() == 0))
            if unseen.size:
                warnings.append(
                    f"{_classes(labels, unseen)} {'occurs' if unseen.size == 1 else 'occur'} in training but never "
                    f"in {_checked(evaluation)}: no IoU is measured for {'it' if unseen.size == 1 else 'them'}"
                )
    return warnings


def _mostly_ignored(v: MaskValues) -> str | None:
    total = int(v.valid_pixels.sum())
    ignored = v.ignored_pixels()
    if not total or ignored <= IGNORED_SHARE * total:
        return None
    return (
        f"{ignored / total:.0%} of the pixels of {_checked(v)} are ignored (the ignore index "
        f"{v.labels.ignore_index}): the loss and the metric skip them"
    )
