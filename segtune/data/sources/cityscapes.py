"""Cityscapes in its own layout, with the label table of the `cityscapesscripts` package.

    root/leftImg8bit/{train,val,test}/<city>/<name>_leftImg8bit.png
    root/gtFine/{train,val,test}/<city>/<name>_gtFine_labelIds.png
    root/gtFine/{train,val,test}/<city>/<name>_gtFine_labelTrainIds.png   (optional)

`data.eval_split: validation` reads the `val` folders. Label ids map to the 19 train ids of
`cityscapesscripts.helpers.labels`, everything else to the ignore index. When every sample has a
`*_labelTrainIds.png` (made by cityscapesscripts' createTrainIdLabelImgs), those are read instead and
must hold train ids or 255.
"""

from __future__ import annotations

from pathlib import Path

import datasets

from ...errors import DatasetError
from ...recipe import DataConfig
from .base import Source, pair_by_stem, paired_dataset, report_problems, require_nonempty

IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_IDS_SUFFIX = "_gtFine_labelIds.png"
TRAIN_IDS_SUFFIX = "_gtFine_labelTrainIds.png"
_FOLDER = {"validation": "val"}


def cityscapes_labels() -> tuple[dict[int, str], tuple[tuple[int, int, int], ...], dict[int, int]]:
    """(id2label, palette, label id -> train id) of the 19 evaluated classes, from cityscapesscripts.

    Raises:
        DatasetError: cityscapesscripts is not installed.
    """
    try:
        from cityscapesscripts.helpers.labels import labels
    except ImportError:
        raise DatasetError(
            "data.source=cityscapes needs the cityscapesscripts package: pip install cityscapesscripts"
        ) from None
    evaluated = sorted((label for label in labels if 0 <= label.trainId < 255), key=lambda label: label.trainId)
    id2label = {label.trainId: label.name for label in evaluated}
    palette = tuple(tuple(label.color) for label in evaluated)
    id_to_train = {label.id: label.trainId for label in labels if 0 <= label.trainId < 255 and label.id >= 0}
    return id2label, palette, id_to_train


def load_cityscapes(data: DataConfig, seed: int) -> Source:
    """The train and eval splits of a Cityscapes tree (`seed` is unused: Cityscapes has fixed splits).

    Raises:
        DatasetError: missing folders, an image without a gtFine mask or the reverse, an empty split.
    """
    root = Path(data.path or "")
    for folder in (root, root / "leftImg8bit", root / "gtFine"):
        if not folder.is_dir():
            raise DatasetError(f"data.path {str(root)!r}: Cityscapes folder {str(folder)!r} not found")
    listed = {split: _list_split(root, split) for split in (data.train_split, data.eval_split)}
    use_train_ids = all(all(p[1] for p in pairs) for pairs, _ in listed.values())
    skipped: list[str] = []
    report_problems(
        [p for _, found in listed.values() for p in found], data.skip_invalid, skipped, f"{root} (Cityscapes)"
    )
    splits = {}
    for split, (pairs, _) in listed.items():
        masks = [train_ids if use_train_ids else label_ids for _, train_ids, label_ids in pairs]
        splits[split] = paired_dataset([image for image, _, _ in pairs], masks)
        require_nonempty(splits[split], split, str(root))
    id2label, palette, id_to_train = cityscapes_labels()
    return Source(
        splits=datasets.DatasetDict(splits),
        name=str(root),
        id2label=id2label,
        palette=palette,
        # train-id files already hold train ids (and 255), which the identity mapping accepts
        label_map=None if use_train_ids else id_to_train,
        skipped=skipped,
    )


def _list_split(root: Path, split: str) -> tuple[list[tuple[str, str | None, str]], list[str]]:
    """[(image, train-ids mask or None, label-ids mask)] of one split, and its pairing problems."""
    folder = _FOLDER.get(split, split)
    images_dir, masks_dir = root / "leftImg8bit" / folder, root / "gtFine" / folder
    if not images_dir.is_dir():
        raise DatasetError(f"{root}: folder {str(images_dir)!r} for split {split!r} not found")
    images = {
        p.relative_to(images_dir).as_posix()[: -len(IMAGE_SUFFIX)]: p for p in images_dir.glob(f"*/*{IMAGE_SUFFIX}")
    }
    masks = {}
    if masks_dir.is_dir():
        masks = {
            p.relative_to(masks_dir).as_posix()[: -len(LABEL_IDS_SUFFIX)]: p
            for p in masks_dir.glob(f"*/*{LABEL_IDS_SUFFIX}")
        }
    image_paths, mask_paths, problems = pair_by_stem(
        images, masks, root, f"leftImg8bit/{folder}/{{}}{IMAGE_SUFFIX}", f"gtFine/{folder}/{{}}{LABEL_IDS_SUFFIX}"
    )
    pairs = []
    for image, label_ids in zip(image_paths, mask_paths):
        train_ids = Path(label_ids[: -len(LABEL_IDS_SUFFIX)] + TRAIN_IDS_SUFFIX)
        pairs.append((image, str(train_ids) if train_ids.is_file() else None, label_ids))
    return pairs, problems
