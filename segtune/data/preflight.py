"""The pre-flight check: every sample looked at once, before the first training step.

    data.check: quick   # (default) each image and mask header: readable, and the same size; and the masks of a
                        # seeded sample (all of a split of up to 500, else 300) decoded and diagnosed
    data.check: full    # every mask decoded and diagnosed
    data.check: off

`build_datasets` runs it on the train and eval splits (after `data.max_*_samples`), so a bad mask stops a
run before it starts, not hours into it. It raises one DatasetError: a recognised mistake of the label
contract on one line with the recipe line that fixes it (`diagnosis.py`: colour masks, 0/255 binary masks,
ids scaled for visibility), else the problems, one line each, as `segtune data check` prints them (that
command runs the same check, at `full`, plus a class table). What runs but is probably not meant (a class
never in training, a split mostly ignored) comes back as warnings, printed once the run is prepared. Under
`data.skip_invalid` it only warns: the samples are skipped when read, as always. Unpaired files were already
found while the source listed them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping

import datasets
import numpy as np

from ..errors import DatasetError, listing
from .decode import ColourMaskError, check_same_size, describe, image_size, read_image, read_mask
from .diagnosis import Diagnosis, diagnose
from .labels import LabelSpec
from .mask_values import MaskValues, sampled
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
    if level == "quick":
        image_name, mask_name = describe(row[IMAGE], "image"), describe(row[LABEL], "mask")
        check_same_size(
            _image_hw(row, image_name, decode_images), image_size(row[LABEL], mask_name), image_name, mask_name
        )
        return None
    raw, mask_name = read_checked_mask(row, labels, decode_images)
    return labels.class_counts(raw, mask_name)


def read_checked_mask(row: dict, labels: LabelSpec, decode_images: bool = False) -> tuple[np.ndarray, str]:
    """The raw mask (H, W) of a stored sample and its name in messages, its image checked readable and of its size.

    Raises:
        DatasetError: an unreadable file, or an image and mask of different sizes; the message names them.
    """
    image_name, mask_name = describe(row[IMAGE], "image"), describe(row[LABEL], "mask")
    image_hw = _image_hw(row, image_name, decode_images)
    raw = read_mask(row[LABEL], mask_name, labels.colors)
    check_same_size(image_hw, raw.shape, image_name, mask_name)
    return raw, mask_name


def _image_hw(row: dict, image_name: str, decode_images: bool) -> tuple[int, ...]:
    if decode_images:
        return tuple(read_image(row[IMAGE], image_name).shape[-2:])
    return image_size(row[IMAGE], image_name)


def scan(
    split: datasets.Dataset, name: str, labels: LabelSpec, level: str = "full", decode_images: bool = False
) -> Iterator[tuple[np.ndarray | None, str | None]]:
    """(check_sample's result, None) or (None, "NAME sample I: problem") for each sample of a split, in order."""
    for index, row in enumerate(undecoded(split)):
        try:
            yield check_sample(row, labels, level, decode_images), None
        except DatasetError as error:
            yield None, f"{name} sample {index}: {error}"


def inspect(
    split: datasets.Dataset,
    name: str,
    labels: LabelSpec,
    level: str,
    seed: int,
    decode_images: bool = False,
    progress: Callable[[int], None] | None = None,
) -> MaskValues:
    """Check every sample of a split at `level`, decoding the masks `mask_values.sampled` picks, and tally them.

    `progress` receives the number of samples done after each one. Problems are collected in the tallies, never raised.
    """
    values = MaskValues(name, len(split), labels)
    chosen = np.zeros(len(split), bool)
    chosen[sampled(len(split), level, seed)] = True
    for index, row in enumerate(undecoded(split)):
        where = f"{name} sample {index}"
        try:
            if chosen[index]:
                raw, mask_name = read_checked_mask(row, labels, decode_images)
                values.add(raw, mask_name, where)
            else:
                check_sample(row, labels, "quick", decode_images)
        except ColourMaskError as error:  # raised only without data.colors: the diagnosis lists its colours
            values.add_colour_mask(error.rgb, describe(row[LABEL], "mask"))
        except DatasetError as error:
            values.problems.append((f"{where}: {error}", False))
        if progress is not None:
            progress(index + 1)
    return values


def problems_of(values: Mapping[str, MaskValues], found: Diagnosis) -> list[str]:
    """Every problem line: the diagnosis' errors first, then each sample's, in order. A diagnosis accounts for the
    values without a class (and for colour masks), so their per-sample lines are then left out."""
    if found.errors:
        return found.errors + [line for v in values.values() for line in v.other_problems()]
    return [line for v in values.values() for line, _ in v.problems]


def preflight(
    splits: Mapping[str, datasets.Dataset],
    labels: LabelSpec,
    level: str,
    skip_invalid: bool,
    where: str,
    seed: int = 0,
) -> list[str]:
    """Run the `data.check` level on `splits` (split name -> samples: the training split first, the evaluation
    split last; one entry when the recipe evaluates on its training split).

    Returns:
        The diagnosis' warnings, for the caller to print once the run is prepared.

    Raises:
        DatasetError: a recognised mistake, on one line with the recipe line that fixes it; or
            "N problem(s) in M samples", then up to ten problems, one line each. Under `skip_invalid`, the
            same is logged as a warning instead.
    """
    if level == "off":
        return []
    values = {name: inspect(split, name, labels, level, seed) for name, split in splits.items()}
    names = list(splits)
    found = diagnose(values, labels, names[0], names[-1])
    problems = problems_of(values, found)
    if not problems:
        return found.warnings
    total = sum(len(split) for split in splits.values())
    one_mistake = len(problems) == 1 and bool(found.errors)  # a recognised mistake: its line is the message
    if one_mistake:
        summary = f"{where}: data.check={level}: {problems[0]}"
    else:
        summary = f"{where}: data.check={level} found {len(problems)} problem(s) in {total} samples:{listing(problems)}"
    if skip_invalid:
        logger.warning("%s\n(data.skip_invalid: these samples are skipped when read)", summary)
        return found.warnings
    if one_mistake:
        raise DatasetError(summary)
    raise DatasetError(
        f"{summary}\n(fix them, set data.skip_invalid=true to skip such samples, or data.check=off to train "
        "without this check)"
    )
