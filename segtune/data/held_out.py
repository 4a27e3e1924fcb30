"""The eval split of a source that has none: `data.val_ratio` of its samples held out, stratified by class.

    data.val_ratio: 0.1     # hold out round(0.1 * n) images (at least one, and one left to train)
    data.stratify: true     # (default) every class in >= 3 images is validated; false: a seeded random draw

A random draw can leave a rare class out of validation entirely: its IoU is then NaN and the mean hides it.
With `data.stratify`, each image's class set is read from its mask (decoded once per data fingerprint and
cached by `class_pixels`), and `stratify.stratified_split` picks the held-out images. The split's images per
class are kept as `Source.split_summary`, which `build_datasets` prints once.

`load_source` calls `hold_out` after the source's loader, when the source leaves a `pool` instead of splits:
the folder source (flat layout, or a train folder without a val folder) and the hub source (no eval split),
hence ADE20K read through the hub. The synthetic scenes and the official datasets have fixed splits.
"""

from __future__ import annotations

import logging

import datasets
import numpy as np

from ..recipe import DataConfig
from .class_pixels import class_pixels
from .labels import label_spec
from .sources.base import Source, held_out_size, require_nonempty, seeded_split
from .stratify import MIN_IMAGES, stratified_split

logger = logging.getLogger(__name__)


def hold_out(source: Source, data: DataConfig, seed: int) -> Source:
    """`source` with its `pool` split into `data.train_split` and `data.eval_split` (train.seed `seed`).

    Raises:
        DatasetError: a split would be empty; (stratify) no class names, or masks that cannot be read or hold
            values without a class (unless `data.skip_invalid`: such samples hold no class here).
    """
    pool = source.pool
    assert pool is not None and data.val_ratio is not None, "hold_out needs a pool and data.val_ratio"
    if data.stratify:
        labels = label_spec(data, source)
        present = class_pixels(pool, labels, "all", data.skip_invalid, purpose="data.stratify").present
        train, evaluation = stratified_split(present, held_out_size(len(pool), data.val_ratio), seed)
        source.split_summary = _summary(present, train, evaluation, labels.id2label, data, seed)
    else:
        train, evaluation = seeded_split(len(pool), data.val_ratio, seed)
    source.splits = datasets.DatasetDict(
        {data.train_split: pool.select(train), data.eval_split: pool.select(evaluation)}
    )
    source.pool = None
    for name, split in source.splits.items():
        require_nonempty(split, name, source.name)
    return source


def _summary(
    present: np.ndarray, train: list[int], evaluation: list[int], id2label: dict[int, str], data: DataConfig, seed: int
) -> str:
    """A header, then one line per class: its images on each side, e.g. "  car  train 41  validation 5"."""
    counts = {data.train_split: present[train].sum(0), data.eval_split: present[evaluation].sum(0)}
    width = max(len(name) for name in id2label.values())
    lines = [
        f"data.val_ratio {data.val_ratio} held out {len(evaluation)} of {len(present)} images, stratified "
        f"(seed {seed}); images per class:"
    ]
    for c, name in id2label.items():
        sides = "  ".join(f"{split} {int(n[c]):>5}" for split, n in counts.items())
        lines.append(f"  {name:<{width}}  {sides}")
    missing = [id2label[c] for c in np.flatnonzero((present.sum(0) >= MIN_IMAGES) & (counts[data.eval_split] == 0))]
    if missing:
        logger.warning(
            "data.stratify: %s appear in %d or more images but not in validation: hold out more (data.val_ratio)",
            missing,
            MIN_IMAGES,
        )
    return "\n".join(lines)
