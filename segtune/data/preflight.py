"""The pre-flight check: every sample looked at once, before the first training step.

    data.check: quick   # (default) each image and mask header: readable, and the same size; no pixel decoded
    data.check: full    # also every mask decoded and its values checked against the LabelSpec
    data.check: off

`build_datasets` runs it on the train and eval splits (after `data.max_*_samples`), so a bad mask stops a
run before it starts, not hours into it. It raises one DatasetError listing the problems, one line each, as
`segtune data check` prints them (that command runs the same per-sample check, at `full`, plus a
class histogram). Under `data.skip_invalid` it only warns: the samples are skipped when read, as always.
Unpaired files were already found while the source listed them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping

import datasets
import numpy as np

from ..errors import DatasetError, listing
from .decode import check_same_size, describe, image_size, read_image, read_mask
from .labels import LabelSpec
from .sources.base import IMAGE, LABEL, undecoded  # not the registry: load_source reaches this module

logger = logging.getLogger(__name__)


def check_sample(row: dict, labels: LabelSpec, level: str = "full", decode_images: bool = False) -> np.ndarray | None:
    """Check one stored sample (`decode=False` Image values).

    `quick` reads the image and mask headers only; `full` decodes the mask and checks its values; images
    are decoded only with `decode_images`.

    Returns:
        `full`: pixels per train id with ignored pixels last, shape (num_labels + 1,); `quick`: None.

    Raises:
        DatasetError: an unreadable file, an image and mask of different sizes, or (full) mask values
            without a train id; the message names the files.
    """
    image_name, mask_name = describe(row[IMAGE], "image"), describe(row[LABEL], "mask")
    if decode_images:
        image_hw = tuple(read_image(row[IMAGE], image_name).shape[-2:])
    else:
        image_hw = image_size(row[IMAGE], image_name)
    if level == "quick":
        check_same_size(image_hw, image_size(row[LABEL], mask_name), image_name, mask_name)
        return None
    raw = read_mask(row[LABEL], mask_name, labels.colors)
    check_same_size(image_hw, raw.shape, image_name, mask_name)
    return labels.class_counts(raw, mask_name)


def scan(
    split: datasets.Dataset, name: str, labels: LabelSpec, level: str = "full", decode_images: bool = False
) -> Iterator[tuple[np.ndarray | None, str | None]]:
    """(check_sample's result, None) or (None, "NAME sample I: problem") for each sample of a split, in order."""
    for index, row in enumerate(undecoded(split)):
        try:
            yield check_sample(row, labels, level, decode_images), None
        except DatasetError as error:
            yield None, f"{name} sample {index}: {error}"


def preflight(
    splits: Mapping[str, datasets.Dataset], labels: LabelSpec, level: str, skip_invalid: bool, where: str
) -> None:
    """Run the `data.check` level on every sample of `splits` (split name -> samples).

    Raises:
        DatasetError: "N problem(s) in M samples", then up to ten problems, one line each; unless
            `skip_invalid`, which logs the same as a warning instead.
    """
    if level == "off":
        return
    problems = [problem for name, split in splits.items() for _, problem in scan(split, name, labels, level) if problem]
    if not problems:
        return
    total = sum(len(split) for split in splits.values())
    summary = f"{where}: data.check={level} found {len(problems)} problem(s) in {total} samples:{listing(problems)}"
    if skip_invalid:
        logger.warning("%s\n(data.skip_invalid: these samples are skipped when read)", summary)
        return
    raise DatasetError(
        f"{summary}\n(fix them, set data.skip_invalid=true to skip such samples, or data.check=off to train "
        "without this check)"
    )
