"""The recipe's `loss:` section made into the training criterion, with its class weights: the recipe's list, or
`auto`: median-frequency balancing of the training split's pixels.

    criterion = build_criterion(recipe, data, accelerator.device, accelerator.print)   # None without a loss section

Median-frequency balancing (Eigen & Fergus, "Predicting Depth, Surface Normals and Semantic Labels with a Common
Multi-Scale Convolutional Architecture", ICCV 2015; SegNet's weights too) weighs class c by

    w_c = median(f) / f_c,    f_c = pixels of class c / labelled pixels of the training images c appears in,

the median taken over the classes that appear. A class as frequent as the median one weighs 1, a rarer one
more; ignored pixels count nowhere. A class with no pixel in the training split gets 1.0, the median class's
weight, and a warning: no pixel of it is ever a target, so under ce and ohem its weight changes nothing, and
under focal its logit keeps being pushed down as any ordinary class's.

The counts come from `segtune.data.class_pixels` (counted once per data fingerprint and cached); the weights
follow from them and are printed once at the start of each run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import torch

from ..data import SegmentationData
from ..data.class_pixels import ClassPixels, class_pixels
from ..errors import RecipeError, listing
from ..recipe import Recipe
from ..recipe.validation import check_class_weights
from .losses import SegmentationLoss

logger = logging.getLogger(__name__)

FORMULA = "median-frequency balancing (Eigen & Fergus 2015)"


def median_frequency_weights(pixels: np.ndarray, image_pixels: np.ndarray) -> np.ndarray:
    """w_c = median(f) / f_c with f_c = pixels[c] / image_pixels[c], over the classes with pixels; 1.0 for the rest.

    Returns:
        float64 weights, one per class.
    """
    present = pixels > 0
    weights = np.ones(len(pixels), dtype=np.float64)
    if present.any():
        frequency = pixels[present] / image_pixels[present]
        weights[present] = np.median(frequency) / frequency
    return weights


def build_criterion(
    recipe: Recipe, data: SegmentationData, device: torch.device | str = "cpu", show: Callable[[str], None] = print
) -> SegmentationLoss | None:
    """The `SegmentationLoss` of the recipe's loss section on `device`, or None without one (the model's own loss
    stays); `show` prints the weights of `class_weights: auto`.

    Raises:
        RecipeError: fewer than 2 classes, or class weights that do not fit the classes (see `class_weights`).
        DatasetError: as `class_weights`.
    """
    if not recipe.loss.active:
        return None
    if data.labels.num_labels < 2:
        raise RecipeError(
            "loss: the terms need at least 2 classes, found 1 (one label: leave out the loss section, the model's "
            "own binary cross-entropy is used)"
        )
    weights = class_weights(recipe, data, show)
    return SegmentationLoss(recipe.loss.active_terms, data.labels.ignore_index, weights).to(device)


def class_weights(recipe: Recipe, data: SegmentationData, show: Callable[[str], None] = print) -> torch.Tensor | None:
    """`loss.class_weights` as a float32 tensor (None when not set); `auto` counts the training split (or reads
    the cache) and `show`s the weights, with the formula and where the counts are cached.

    Raises:
        RecipeError: a list whose length is not the number of classes.
        DatasetError: (auto) masks that cannot be counted, as `class_pixels`.
    """
    weights, labels = recipe.loss.class_weights, data.labels
    if weights is None:
        return None
    problems = check_class_weights(weights, labels.num_labels)
    if problems:
        raise RecipeError(f"{problems[0]} (the classes: {listing(list(labels.id2label.values()), inline=True)})")
    if weights == "auto":
        counts = class_pixels(data.train.rows, labels, data.train.split, recipe.data.skip_invalid)
        weights = tuple(median_frequency_weights(counts.pixels, counts.image_pixels))
        show(_describe(weights, labels.id2label, counts))
        absent = [labels.id2label[c] for c in np.flatnonzero(counts.pixels == 0)]
        if absent:
            logger.warning("loss.class_weights=auto: no pixel of %s in the training split; weight 1.0", absent)
    return torch.tensor(weights, dtype=torch.float32)


def _describe(weights: tuple[float, ...], id2label: dict[int, str], counts: ClassPixels) -> str:
    how = "read from the cache" if counts.from_cache else "counted now and cached"
    listed = ", ".join(f"{id2label[c]} {w:.3g}" for c, w in enumerate(weights))
    return (
        f"loss.class_weights: auto, {FORMULA}, over {counts.samples} training images ({how}: {counts.cache}):\n"
        f"  {listed}"
    )
