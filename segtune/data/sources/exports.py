"""What the labelling-tool export sources (coco, labelme, yolo) share: class ids and splits of image/mask pairs.

Class ids: the export's class names, in the export's order, become 1..N and 0 is background (what no shape
covers), unless the recipe gives `data.id2label`: then each name takes the recipe's id for it, and a name the
recipe lacks is an error naming the file. Either way the mapping is the run's id2label.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import datasets

from ...errors import DatasetError, listing
from ...recipe import DataConfig
from .base import Source, paired_dataset, report_problems, require_nonempty

BACKGROUND = "background"
ALL = "all"  # the one listing of an export without splits: the pool load_source splits by data.val_ratio
EVAL_NAMES = ("valid", "val", "validation")  # eval split folders, as tools name them (Roboflow: valid/)

Pairs = tuple[list[str], list[str]]  # (image paths, mask paths), in order
Document = dict[str, Any]  # one annotation file, as JSON


def read_document(path: Path, kind: str, key: str, expected: str) -> Document:
    """An annotation file of `kind` ("COCO JSON"): a JSON object holding a list under `key`.

    Raises:
        DatasetError: unreadable, not JSON, or not such an object; naming the file and `expected`.
    """
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise DatasetError(f"{path}: cannot read {kind}: {error}") from None
    if not isinstance(document, dict) or not isinstance(document.get(key), list):
        raise DatasetError(f"{path}: not a {kind} file (expected {expected})")
    return document


def class_ids(names: Sequence[str], recipe_id2label: Mapping[int, str] | None, where: str) -> dict[str, int]:
    """Class name -> class id: 1..N in `names`' order (0 = background), or the recipe's ids for those names.

    Raises:
        DatasetError: the recipe's id2label lacks one of `names` (naming `where`).
    """
    if not recipe_id2label:
        return {name: i for i, name in enumerate(names, start=1)}
    by_name = {name: class_id for class_id, name in recipe_id2label.items()}
    missing = [name for name in names if name not in by_name]
    if missing:
        raise DatasetError(
            f"{where}: classes {listing(missing, inline=True)} are not in data.id2label "
            f"({listing(sorted(by_name), inline=True)}); add them, or drop data.id2label to take the export's"
        )
    return {name: by_name[name] for name in names}


def export_id2label(ids: Mapping[str, int], recipe_id2label: Mapping[int, str] | None) -> dict[int, str]:
    """The run's id2label: the recipe's, else background 0 and the export's names at their ids."""
    if recipe_id2label:
        return dict(recipe_id2label)
    return {0: BACKGROUND} | {class_id: name for name, class_id in ids.items()}


def export_source(
    listed: Mapping[str, Pairs],
    data: DataConfig,
    root: Path,
    id2label: dict[int, str],
    problems: list[str],
) -> Source:
    """The Source of rasterised pairs per split: the recipe's train and eval splits, or one `ALL` listing that
    `load_source` splits by `data.val_ratio` (stratified, `held_out.py`). Listing `problems` (missing images) stop
    the run unless `data.skip_invalid`.

    Raises:
        DatasetError: listing problems, an `ALL` listing without data.val_ratio, an empty split.
    """
    skipped: list[str] = []
    report_problems(problems, data.skip_invalid, skipped, str(root))
    splits = {split: paired_dataset(*pairs) for split, pairs in listed.items()}
    pool = splits.pop(ALL, None)
    if pool is not None and data.val_ratio is None:
        raise DatasetError(
            f"{root}: the export has no train/validation split; set data.val_ratio (e.g. 0.1) for a seeded split"
        )
    for split, dataset in splits.items():
        require_nonempty(dataset, split, str(root))
    if pool is not None:  # then the only listing: load_source splits it
        require_nonempty(pool, data.train_split, str(root))
    return Source(splits=datasets.DatasetDict(splits), name=str(root), id2label=id2label, skipped=skipped, pool=pool)
