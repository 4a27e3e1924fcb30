"""A local folder of images and masks, paired by file name.

Three layouts are recognised (split folder names: `data.train_split` or `train`; `data.eval_split`,
`val`, `validation` or `valid`):

    root/train/images/*   root/train/masks/*        split folders, each with images/ and masks/
    root/val/images/*     root/val/masks/*

    root/images/train/*   root/masks/train/*        images/ and masks/, each with split folders
    root/images/val/*     root/masks/val/*

    root/images/*         root/masks/*              flat: `data.val_ratio` held out (held_out.py)

An image and its mask share their path relative to images/ and masks/ without the extension
(`images/aachen/x.jpg` pairs with `masks/aachen/x.png`); subfolders are allowed. Images may be PNG,
JPEG, BMP, TIFF or WebP, in RGB, RGBA, grayscale or palette mode (all read as RGB). Masks are lossless
single-channel images (PNG, BMP, TIFF): 8-bit, 16-bit or palette, whose values (for palette masks:
palette *indices*) are class ids. Class names come from the recipe, from `root/id2label.json`, or are
`class_0..` for `data.num_labels` classes. When masks are palette PNGs, their palette gives the class colours.

Masks may also be colour images (RGB, or RGBA with the alpha ignored) when colours are given, by `data.colors`
or by `root/id2label.json` entries of the form `{"0": {"name": "road", "color": "#804080"}}`: each colour is
decoded to its class id (`segtune.data.colors`), and the colours become the run's palette.
"""

from __future__ import annotations

from pathlib import Path

import datasets
import PIL.Image

from ...errors import DatasetError
from ...recipe import DataConfig
from ..labels import Color, read_id2label, read_label_colors
from .base import (
    LABEL,
    Source,
    paired_dataset,
    relative,
    report_problems,
    require_nonempty,
    undecoded,
)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
MASK_SUFFIXES = {".png", ".bmp", ".tif", ".tiff"}
_LOSSY = {".jpg", ".jpeg", ".webp"}
EVAL_NAMES = ("val", "validation", "valid")


def load_folder(data: DataConfig, seed: int) -> Source:
    """The train and eval splits of an image/mask folder.

    Raises:
        DatasetError: missing folder, unrecognised layout, an image without a mask or the reverse, a lossy
            mask, two files with one name, an empty split (pairing problems are skipped under skip_invalid).
    """
    root = Path(data.path or "")
    if not root.is_dir():
        raise DatasetError(f"data.path {str(root)!r}: folder not found")
    layout = _layout(root, data)
    skipped: list[str] = []
    splits, problems = {}, []
    for split, (images_dir, masks_dir) in layout.items():
        images, masks, found = _pair(images_dir, masks_dir, root)
        problems += found
        splits[split] = paired_dataset(images, masks)
    report_problems(problems, data.skip_invalid, skipped, str(root))
    pool = _flat_pool(splits.popitem()[1], data, root) if len(layout) == 1 else None
    for split, dataset in splits.items():
        require_nonempty(dataset, split, str(root))
    id2label_file = root / "id2label.json"
    found = id2label_file.is_file()
    return Source(
        splits=datasets.DatasetDict(splits),
        name=str(root),
        id2label=read_id2label(id2label_file) if found else None,
        palette=_mask_palette(pool if pool is not None else splits[data.train_split]),
        skipped=skipped,
        colors=read_label_colors(id2label_file) if found and data.colors is None else None,
        pool=pool,
    )


def _layout(root: Path, data: DataConfig) -> dict[str, tuple[Path, Path]]:
    """split -> (images folder, masks folder); a single entry for the flat layout."""
    train_names = dict.fromkeys((data.train_split, "train"))
    eval_names = dict.fromkeys((data.eval_split, *EVAL_NAMES))
    for nested in (
        lambda s: (root / s / "images", root / s / "masks"),
        lambda s: (root / "images" / s, root / "masks" / s),
    ):
        train = next((nested(s) for s in train_names if nested(s)[0].is_dir()), None)
        if train is None:
            continue
        evaluation = next((nested(s) for s in eval_names if nested(s)[0].is_dir()), None)
        if evaluation is None:
            if data.val_ratio is None:
                raise DatasetError(
                    f"{root}: found {train[0]} but no eval split folder (tried {list(eval_names)}); "
                    "add one, or set data.val_ratio to split the train folder"
                )
            return {"all": _with_masks(train)}
        return {data.train_split: _with_masks(train), data.eval_split: _with_masks(evaluation)}
    if (root / "images").is_dir():
        return {"all": _with_masks((root / "images", root / "masks"))}
    raise DatasetError(
        f"{root}: no images/ folder found; expected train/images + train/masks (and val/...), "
        "images/train + masks/train (and .../val), or a flat images/ + masks/ with data.val_ratio"
    )


def _with_masks(dirs: tuple[Path, Path]) -> tuple[Path, Path]:
    if not dirs[1].is_dir():
        raise DatasetError(f"{dirs[1]}: masks folder not found (expected beside {dirs[0]})")
    return dirs


def _files(folder: Path, suffixes: set[str]) -> dict[str, list[Path]]:
    """Relative path without suffix -> files, for every file with one of `suffixes` (hidden files skipped)."""
    found: dict[str, list[Path]] = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.suffix.lower() in suffixes and not path.name.startswith("."):
            found.setdefault(path.relative_to(folder).with_suffix("").as_posix(), []).append(path)
    return found


def _pair(images_dir: Path, masks_dir: Path, root: Path) -> tuple[list[str], list[str], list[str]]:
    """Paired (images, masks) paths and the problems found while pairing them."""
    images = _files(images_dir, IMAGE_SUFFIXES)
    masks = _files(masks_dir, MASK_SUFFIXES | _LOSSY)
    problems = []
    for name in sorted(images.keys() - masks.keys()):
        problems.append(
            f"image {relative(images[name][0], root)} has no mask named {name}.* in {relative(masks_dir, root)}"
        )
    for name in sorted(masks.keys() - images.keys()):
        problems.append(
            f"mask {relative(masks[name][0], root)} has no image named {name}.* in {relative(images_dir, root)}"
        )
    paired_images, paired_masks = [], []
    for name in sorted(images.keys() & masks.keys()):
        problem = _pair_problem(images[name], masks[name], root)
        if problem:
            problems.append(problem)
        else:
            paired_images.append(str(images[name][0]))
            paired_masks.append(str(masks[name][0]))
    return paired_images, paired_masks, problems


def _pair_problem(images: list[Path], masks: list[Path], root: Path) -> str | None:
    for files, kind in ((images, "images"), (masks, "masks")):
        if len(files) > 1:
            return f"{kind} {', '.join(relative(f, root) for f in files)} share one name; keep one"
    if masks[0].suffix.lower() in _LOSSY:
        return f"mask {relative(masks[0], root)} is lossy ({masks[0].suffix}): compression alters class ids; save masks as PNG"
    return None


def _flat_pool(dataset: datasets.Dataset, data: DataConfig, root: Path) -> datasets.Dataset:
    """Every sample of a folder without an eval split: `load_source` holds out `data.val_ratio` of them."""
    if data.val_ratio is None:
        raise DatasetError(
            f"{root}: images/ and masks/ have no split folders; set data.val_ratio (e.g. 0.1) for a seeded split"
        )
    require_nonempty(dataset, data.train_split, str(root))
    return dataset


def _mask_palette(split: datasets.Dataset) -> tuple[Color, ...] | None:
    """The colours of the first mask's palette, when masks are palette PNGs (index i = class i)."""
    if len(split) == 0:
        return None
    first = undecoded(split.select_columns([LABEL]))[0][LABEL]
    try:
        with PIL.Image.open(first["path"]) as mask:
            palette = mask.getpalette() if mask.mode == "P" else None
    except (OSError, ValueError):
        return None  # reported with the file name when the sample is read
    return tuple(tuple(palette[i : i + 3]) for i in range(0, len(palette), 3)) if palette else None
