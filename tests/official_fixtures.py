"""Datasets in their official layouts, written inside the tests: ADEChallengeData2016 and COCO-Stuff-164k."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.data_fixtures import save

# The ids a raw COCO-Stuff stuffthingmap may hold, written here from the dataset's definition (category id - 1
# for the 182 ids, minus the 11 thing ids COCO never used), independently of segtune's table.
COCO_UNUSED = {11, 25, 28, 29, 44, 65, 67, 68, 70, 82, 90}
COCO_USED = [i for i in range(182) if i not in COCO_UNUSED]


def _image(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)


def _values_mask(values: np.ndarray, height: int, width: int, shift: int) -> np.ndarray:
    """A (height, width) uint8 mask cycling through `values`, so every value appears when there are enough pixels."""
    return np.roll(np.resize(values, height * width), shift).reshape(height, width).astype(np.uint8)


def make_ade20k(root: Path, per_split: int = 2) -> Path:
    """root/ADEChallengeData2016 with images/{training,validation}/ADE_*.jpg and annotations/... PNGs of 0..150.

    Sizes differ per sample (native resolution must be kept); every value 0..150 appears in each mask.
    """
    rng = np.random.default_rng(0)
    base = root / "ADEChallengeData2016"
    for folder, prefix in (("training", "ADE_train"), ("validation", "ADE_val")):
        for i in range(per_split):
            height, width = 32 + 4 * i, 40 + 2 * i  # at least 32: B0 reduces stage 1 (H/4) by 8
            stem = f"{prefix}_{i + 1:08d}"
            save(base / "images" / folder / f"{stem}.jpg", _image(rng, height, width), quality=90)
            save(base / "annotations" / folder / f"{stem}.png", _values_mask(np.arange(151), height, width, 7 * i))
    return base


def make_coco_stuff(root: Path, per_split: int = 2, train_ids: bool = False) -> Path:
    """root/images/{train2017,val2017}/*.jpg and root/annotations/... raw stuffthingmaps (every used id and 255).

    With `train_ids`, also each mask's `*_labelTrainIds.png`, converted with the table written from COCO_USED.
    """
    rng = np.random.default_rng(1)
    to_train = {raw: i for i, raw in enumerate(COCO_USED)} | {255: 255}
    for folder in ("train2017", "val2017"):
        for i in range(per_split):
            height, width = 16 + 2 * i, 16 + 4 * i
            stem = f"{100 + i:012d}" if folder == "train2017" else f"{900 + i:012d}"
            raw = _values_mask(np.array([*COCO_USED, 255]), height, width, 5 * i)
            save(root / "images" / folder / f"{stem}.jpg", _image(rng, height, width), quality=90)
            save(root / "annotations" / folder / f"{stem}.png", raw)
            if train_ids:
                converted = np.vectorize(to_train.get)(raw).astype(np.uint8)
                save(root / "annotations" / folder / f"{stem}_labelTrainIds.png", converted)
    return root
