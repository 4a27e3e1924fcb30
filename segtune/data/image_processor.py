"""The image processor: normalisation and eval-time resizing, saved with every model.

`build_image_processor(recipe)` is a stock `SegformerImageProcessor`; saved next to the weights, it lets
`AutoImageProcessor.from_pretrained(checkpoint)` reproduce evaluation preprocessing exactly.

- `eval.resize = (long, short)` -> `size={"shortest_edge": short, "longest_edge": long}`: keep the aspect
  ratio, short side to `short` unless the long side would pass `long` (mmseg's keep-ratio test scale).
- `eval.resize = None` -> `do_resize=False`: images are evaluated at their own size.
- `do_reduce_labels=False` always: labels are reduced once, by the data layer's LabelSpec.
"""

from __future__ import annotations

import torch
from transformers import SegformerImageProcessor

from ..recipe import Recipe


def build_image_processor(recipe: Recipe) -> SegformerImageProcessor:
    """The SegformerImageProcessor for `recipe` (ImageNet mean/std, resize per `recipe.eval.resize`)."""
    resize = recipe.eval.resize
    if resize is None:
        return SegformerImageProcessor(do_resize=False, do_reduce_labels=False)
    long_edge, short_edge = resize
    return SegformerImageProcessor(
        do_resize=True,
        size={"shortest_edge": short_edge, "longest_edge": long_edge},
        do_reduce_labels=False,
    )


def eval_pixel_values(processor: SegformerImageProcessor, image: torch.Tensor) -> torch.Tensor:
    """float32 (3, H', W'): a uint8 (3, H, W) image resized and normalised exactly as at inference."""
    return processor(images=image, return_tensors="pt")["pixel_values"][0]
