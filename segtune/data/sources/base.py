"""What every source returns, and the helpers they share."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import datasets
import numpy as np

from ...errors import DatasetError
from ..labels import Color

IMAGE, LABEL = "image", "label"
FEATURES = datasets.Features({IMAGE: datasets.Image(), LABEL: datasets.Image()})
_MAX_LISTED = 10


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
        skipped: problems found while listing files that `data.skip_invalid` let through (dropped samples).
    """

    splits: datasets.DatasetDict
    name: str
    id2label: dict[int, str] | None = None
    palette: tuple[Color, ...] | None = None
    reduce_labels: bool = False
    label_map: Mapping[int, int] | None = None
    skipped: list[str] = field(default_factory=list)


def paired_dataset(images: Sequence[str], masks: Sequence[str]) -> datasets.Dataset:
    """A Dataset of file paths with Image features: only paths are stored, pixels are read per access."""
    return datasets.Dataset.from_dict({IMAGE: list(images), LABEL: list(masks)}, features=FEATURES)


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
    listed = "\n  ".join(problems[:_MAX_LISTED])
    more = f"\n  ... and {len(problems) - _MAX_LISTED} more" if len(problems) > _MAX_LISTED else ""
    raise DatasetError(
        f"{what}: {len(problems)} problem(s):\n  {listed}{more}\n(set data.skip_invalid=true to skip such samples)"
    )


def require_nonempty(split: datasets.Dataset, split_name: str, where: str) -> None:
    """Raises DatasetError when a split has no samples."""
    if len(split) == 0:
        raise DatasetError(f"{where}: split {split_name!r} is empty")


def seeded_split(n: int, val_ratio: float, seed: int) -> tuple[list[int], list[int]]:
    """Indices (train, eval) of a seeded random split; at least one sample on each side when n >= 2."""
    order = np.random.default_rng(seed).permutation(n)
    n_eval = min(max(1, round(n * val_ratio)), n - 1) if n >= 2 else 0
    return sorted(order[n_eval:].tolist()), sorted(order[:n_eval].tolist())
