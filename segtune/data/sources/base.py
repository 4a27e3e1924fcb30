"""What every source returns, and the helpers they share."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import numpy as np

from ...errors import DatasetError, listing
from ..labels import Color, ColorTable

IMAGE, LABEL = "image", "label"
FEATURES = datasets.Features({IMAGE: datasets.Image(), LABEL: datasets.Image()})


@dataclass
class Source:
    """Samples of one dataset, before any transform.

    Attributes:
        splits: a DatasetDict with at least the train and eval splits, each with an `image` and a `label`
            column of `datasets.Image()` features (decoded lazily, per access).
        name: what to call the dataset in messages (a path or a Hub id).
        id2label: class names the source knows (None: the recipe must give names or `num_labels`).
        palette: one colour per class, when the source defines them.
        reduce_labels: the source's own convention is ADE20K's (0 = other, k -> k - 1).
        label_map: raw value -> train id, when files store other ids (Cityscapes label ids).
        strict_label_map: values the label_map does not list are invalid, not ignored (COCO-Stuff's ids).
        skipped: problems found while listing files that `data.skip_invalid` let through (dropped samples).
        colors: colour -> class id of colour masks, when the source's id2label.json gives colours (the
            recipe's `data.colors` replaces them).
        pool: every sample, when the source has no eval split: `load_source` holds out `data.val_ratio` of it
            (`segtune/data/held_out.py`) and fills `splits`. A loader leaves `splits` empty then.
        split_summary: the held-out split's images per class, to print once at the start of a run.
    """

    splits: datasets.DatasetDict
    name: str
    id2label: dict[int, str] | None = None
    palette: tuple[Color, ...] | None = None
    reduce_labels: bool = False
    label_map: Mapping[int, int] | None = None
    strict_label_map: bool = False
    skipped: list[str] = field(default_factory=list)
    colors: ColorTable | None = None
    pool: datasets.Dataset | None = None
    split_summary: str | None = None


def paired_dataset(images: Sequence[str], masks: Sequence[str]) -> datasets.Dataset:
    """A Dataset of file paths with Image features: only paths are stored, pixels are read per access."""
    return datasets.Dataset.from_dict({IMAGE: list(images), LABEL: list(masks)}, features=FEATURES)


def undecoded(split: datasets.Dataset) -> datasets.Dataset:
    """`split` with its image and label columns (those it has) as stored: `{"path", "bytes"}`, never decoded."""
    for column in (IMAGE, LABEL):
        if column in split.column_names:
            split = split.cast_column(column, datasets.Image(decode=False))
    return split


def files_by_stem(folder: Path, suffixes: Sequence[str]) -> dict[str, Path]:
    """Name without `suffix` -> path, for the files directly in `folder` whose name ends with one of `suffixes`
    (case-insensitive); hidden files are skipped. Empty when the folder is missing."""
    if not folder.is_dir():
        return {}
    found = {}
    for path in sorted(folder.iterdir()):
        name = path.name.lower()
        suffix = next((s for s in suffixes if name.endswith(s.lower())), None)
        if suffix is None or name.startswith("."):
            continue
        if path.is_file():
            found[path.name[: -len(suffix)]] = path
    return found


def pair_by_stem(
    images: Mapping[str, Path], masks: Mapping[str, Path], root: Path, image_name: str, mask_name: str
) -> tuple[list[str], list[str], list[str]]:
    """(image paths, mask paths) of the stems both have, and one problem line per unpaired file.

    `image_name` / `mask_name` are the expected files as templates relative to `root`, e.g.
    "images/training/{}.jpg", named in the problems ("image 'images/training/a.jpg' has no mask ...").
    """
    problems = [
        f"image {relative(images[s], root)} has no mask {mask_name.format(s)!r}"
        for s in sorted(images.keys() - masks.keys())
    ]
    problems += [
        f"mask {relative(masks[s], root)} has no image {image_name.format(s)!r}"
        for s in sorted(masks.keys() - images.keys())
    ]
    paired = sorted(images.keys() & masks.keys())
    return [str(images[s]) for s in paired], [str(masks[s]) for s in paired], problems


def official_split_folder(root: Path, split: str, folders: Mapping[str, str], dataset: str) -> str:
    """The folder name of `split` in a dataset's own `images/<folder>` + `annotations/<folder>` layout.

    Raises:
        DatasetError: the split name has no folder, or either folder is missing.
    """
    folder = folders.get(split)
    if folder is None:
        raise DatasetError(
            f"{root} ({dataset}): split {split!r} (data.train_split / data.eval_split) has no folder; "
            f"expected one of {list(folders)}"
        )
    for needed in (root / "images" / folder, root / "annotations" / folder):
        if not needed.is_dir():
            raise DatasetError(f"{root} ({dataset}): folder {str(needed)!r} for split {split!r} not found")
    return folder


def paired_splits(
    listed: Mapping[str, tuple[list[str], list[str], list[str]]], skip_invalid: bool, root: Path, dataset: str
) -> tuple[datasets.DatasetDict, list[str]]:
    """Splits from per-split `(images, masks, problems)` listings (as `pair_by_stem` returns them), and the
    listing problems `skip_invalid` let through.

    Raises:
        DatasetError: listing problems (unless `skip_invalid`), or an empty split.
    """
    skipped: list[str] = []
    report_problems([p for *_, found in listed.values() for p in found], skip_invalid, skipped, f"{root} ({dataset})")
    splits = datasets.DatasetDict(
        {split: paired_dataset(images, masks) for split, (images, masks, _) in listed.items()}
    )
    for split, dataset_split in splits.items():
        require_nonempty(dataset_split, split, str(root))
    return splits, skipped


def relative(path: Path, root: Path) -> str:
    """`path` relative to `root`, quoted, for messages; the whole path when it lies elsewhere."""
    return repr(path.relative_to(root).as_posix()) if path.is_relative_to(root) else repr(str(path))


def report_problems(problems: list[str], skip_invalid: bool, skipped: list[str], what: str) -> None:
    """Raise the listing problems, or record them as skipped samples under `data.skip_invalid`.

    Raises:
        DatasetError: listing up to ten problems (and how many more), unless `skip_invalid`.
    """
    if not problems:
        return
    if skip_invalid:
        skipped.extend(problems)
        return
    raise DatasetError(
        f"{what}: {len(problems)} problem(s):{listing(problems)}\n(set data.skip_invalid=true to skip such samples)"
    )


def require_nonempty(split: datasets.Dataset, split_name: str, where: str) -> None:
    """Raises DatasetError when a split has no samples."""
    if len(split) == 0:
        raise DatasetError(f"{where}: split {split_name!r} is empty")


def held_out_size(n: int, val_ratio: float) -> int:
    """Samples held out of `n`: round(n * val_ratio), at least one on each side when n >= 2."""
    return min(max(1, round(n * val_ratio)), n - 1) if n >= 2 else 0


def seeded_split(n: int, val_ratio: float, seed: int) -> tuple[list[int], list[int]]:
    """Indices (train, eval) of a seeded random split; at least one sample on each side when n >= 2.

    Not `datasets.Dataset.train_test_split`: that shuffles the order of both sides (here each keeps the files'
    order, so logs and prediction grids name the same samples first whatever the seed), and its
    `stratify_by_column` takes one class per row, where a segmentation image holds a set of classes.
    """
    order = np.random.default_rng(seed).permutation(n)
    n_eval = held_out_size(n, val_ratio)
    return sorted(order[n_eval:].tolist()), sorted(order[:n_eval].tolist())
