"""Training augmentation as SegFormer's mmseg pipeline, on torchvision.transforms.v2, keyed for exact resume.

mmseg (paper) order, every value from `recipe.augment`:

    RandomResize(scale, ratio_range, keep_ratio) -> RandomCrop(crop_size, cat_max_ratio) -> RandomFlip
    -> PhotoMetricDistortion -> Normalize -> Pad(crop_size, image 0, mask ignore_index)

Image and mask go through the same v2 pipeline as `tv_tensors.Image` and `tv_tensors.Mask`, so geometry
is shared and masks are always resampled nearest-neighbour. The mask enters raw (validated, not yet
mapped) and `EncodeLabels` maps it to train ids through the LabelSpec once, after the crop: a per-pixel
lookup commutes with nearest resampling, cropping and flipping, and the crop is a fraction of the
full mask. As in mmseg, padding comes after normalisation: padded pixels are 0 in normalised space
(the mean colour) and labelled with the ignore index.

Randomness: `TrainTransform(image, mask, key)` seeds torch's generator from (seed, key) inside
`fork_rng`, so an item's augmentation depends on nothing else: not the worker, its seed, the process,
or which items came before.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torchvision.transforms.v2.functional as F
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2._utils import query_size

from ..recipe import AugmentConfig
from .labels import LabelSpec

_CAT_MAX_TRIES = 10  # mmseg re-draws a crop up to 10 times while one class dominates it

# RGB -> YIQ (NTSC). Turning the hue is rotating the (I, Q) chroma plane about the luma axis.
_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], dtype=torch.float64)
_YIQ_INVERSE = torch.linalg.inv(_YIQ)


def _uniform(low: float, high: float) -> float:
    return float(torch.empty(()).uniform_(low, high)) if high > low else float(low)


def _coin(p: float = 0.5) -> bool:
    return bool(torch.rand(()) < p)


class RandomResizeCrop(v2.Transform):
    """mmseg's `RandomResize(scale, ratio_range, keep_ratio=True)` then `RandomCrop(crop_size, cat_max_ratio)`.

    The image is rescaled to fit inside `scale * ratio` (long, short), ratio ~ U(ratio_range); a crop of
    at most `crop_size` (h, w) is drawn in the rescaled image, re-drawn up to 10 times while one class
    covers `cat_max_ratio` or more of its labelled pixels. Only the source region under the crop is
    resampled (`resized_crop`): the same distribution as resizing the whole image and then cropping, at
    the cost of the crop alone (a 2x upscale of a 1024x2048 image would otherwise resample 8 M pixels).
    Class fractions are measured on that source region, which nearest resizing preserves up to rounding;
    `class_pixels(region)` counts the labelled pixels per class (LabelSpec.class_pixels on raw masks).
    """

    def __init__(
        self,
        scale: tuple[int, int],
        ratio_range: tuple[float, float],
        crop_size: tuple[int, int],
        cat_max_ratio: float,
        class_pixels: Callable[[torch.Tensor], torch.Tensor],
    ) -> None:
        super().__init__()
        self.scale, self.ratio_range, self.crop_size = scale, ratio_range, crop_size
        self.cat_max_ratio, self.class_pixels = cat_max_ratio, class_pixels

    def make_params(self, flat_inputs: list) -> dict:
        h, w = query_size(flat_inputs)
        ratio = _uniform(*self.ratio_range)
        long_edge, short_edge = int(self.scale[0] * ratio), int(self.scale[1] * ratio)
        factor = min(long_edge / max(h, w), short_edge / min(h, w))  # mmcv.imrescale: fit inside (long, short)
        resized = (int(h * factor + 0.5), int(w * factor + 0.5))
        out = (min(self.crop_size[0], resized[0]), min(self.crop_size[1], resized[1]))
        mask = next((i for i in flat_inputs if isinstance(i, tv_tensors.Mask)), None)
        box = self._draw_box((h, w), resized, out)
        if mask is not None and self.cat_max_ratio < 1:
            for _ in range(_CAT_MAX_TRIES):
                if self._balanced(mask, box):
                    break
                box = self._draw_box((h, w), resized, out)
        return {"box": box, "size": list(out), "antialias": factor < 1}

    @staticmethod
    def _draw_box(source: tuple[int, int], resized: tuple[int, int], out: tuple[int, int]) -> tuple[int, int, int, int]:
        """(top, left, height, width) in the source image of a random `out` window of the resized image."""
        box = []
        for extent, full, window in zip(source, resized, out):
            start = int(torch.randint(0, full - window + 1, ()))  # mmseg: randint(0, margin + 1)
            scale = full / extent
            first = min(int(round(start / scale)), extent - 1)
            last = max(min(int(round((start + window) / scale)), extent), first + 1)
            box.append((first, last - first))
        (top, height), (left, width) = box
        return top, left, height, width

    def _balanced(self, mask: torch.Tensor, box: tuple[int, int, int, int]) -> bool:
        """mmseg: more than one class, and none with `cat_max_ratio` or more of the labelled pixels."""
        top, left, height, width = box
        counts = self.class_pixels(mask.as_subclass(torch.Tensor)[..., top : top + height, left : left + width])
        counts = counts[counts > 0]
        return counts.numel() > 1 and float(counts.max()) / float(counts.sum()) < self.cat_max_ratio

    def transform(self, inpt: torch.Tensor, params: dict) -> torch.Tensor:
        top, left, height, width = params["box"]
        return self._call_kernel(
            F.resized_crop, inpt, top, left, height, width, params["size"], antialias=params["antialias"]
        )  # masks ignore antialias and use nearest


class EncodeLabels(v2.Transform):
    """Raw mask values -> train ids, through `LabelSpec.map` (the one mapping / reduction of the label)."""

    _transformed_types = (tv_tensors.Mask,)

    def __init__(self, labels: LabelSpec) -> None:
        super().__init__()
        self.labels = labels

    def transform(self, inpt: torch.Tensor, params: dict) -> torch.Tensor:
        return tv_tensors.wrap(self.labels.map(inpt.as_subclass(torch.Tensor)), like=inpt)


class PhotoMetricDistortion(v2.Transform):
    """mmseg's PhotoMetricDistortion on float images in [0, 1]; each step with probability 0.5.

    brightness: add U(-brightness, brightness). contrast: multiply by U(contrast) (mmseg's "contrast"
    scales pixel values), before or after the colour steps (a coin decides, as mmseg). saturation:
    `adjust_saturation` by U(saturation). hue: turn by U(-hue, hue) of the colour circle, see
    `rotate_hue`. Values are clipped to [0, 1] after each step, as mmseg clips to [0, 255].
    """

    _transformed_types = (tv_tensors.Image,)

    def __init__(
        self, brightness: float, contrast: tuple[float, float], saturation: tuple[float, float], hue: float
    ) -> None:
        super().__init__()
        self.brightness, self.contrast, self.saturation, self.hue = brightness, contrast, saturation, hue

    def make_params(self, flat_inputs: list) -> dict:
        # draw in mmseg's order: brightness, mode, contrast, saturation, hue
        return {
            "brightness": _uniform(-self.brightness, self.brightness) if _coin() else None,
            "contrast_first": _coin(),
            "contrast": _uniform(*self.contrast) if _coin() else None,
            "saturation": _uniform(*self.saturation) if _coin() else None,
            "hue": _uniform(-self.hue, self.hue) if _coin() else None,
        }

    def transform(self, inpt: torch.Tensor, params: dict) -> torch.Tensor:
        image = inpt.as_subclass(torch.Tensor)  # float, made by ToDtype for this item: safe to change in place
        if params["brightness"] is not None:
            image = image.add_(params["brightness"]).clamp_(0.0, 1.0)
        if params["contrast_first"] and params["contrast"] is not None:
            image = image.mul_(params["contrast"]).clamp_(0.0, 1.0)
        if params["saturation"] is not None:
            image = F.adjust_saturation_image(image, params["saturation"])
        if params["hue"] is not None and params["hue"] != 0:
            image = rotate_hue(image, params["hue"])
        if not params["contrast_first"] and params["contrast"] is not None:
            image = image.mul_(params["contrast"]).clamp_(0.0, 1.0)
        return tv_tensors.wrap(image, like=inpt)


def rotate_hue(image: torch.Tensor, fraction: float) -> torch.Tensor:
    """Turn the hue of a float RGB image (3, H, W) in [0, 1] by `fraction` of the colour circle.

    A rotation of the YIQ chroma plane (as NVIDIA DALI's and MXNet's hue jitter): one 3x3 matrix, ~25x
    faster than the HSV round trip of torchvision's `adjust_hue` (mmseg turns the hue in OpenCV's HSV).
    Both keep grey pixels grey and turn colours the same way (red towards yellow for fraction > 0); YIQ
    keeps luma where HSV keeps the largest channel. On a 1024x1024 crop: ~3 ms against ~70 ms.
    """
    angle = -2 * torch.pi * fraction  # negative angle in (I, Q) turns red towards yellow, as HSV does
    cos, sin = float(torch.cos(torch.tensor(angle))), float(torch.sin(torch.tensor(angle)))
    rotation = torch.tensor([[1.0, 0.0, 0.0], [0.0, cos, -sin], [0.0, sin, cos]], dtype=torch.float64)
    matrix = (_YIQ_INVERSE @ rotation @ _YIQ).to(image.dtype)
    return (matrix @ image.reshape(3, -1)).reshape(image.shape).clamp_(0.0, 1.0)


class PadTo(v2.Transform):
    """Pad bottom and right up to `size` (h, w): images with 0, masks with `mask_fill` (mmseg's Pad)."""

    def __init__(self, size: tuple[int, int], mask_fill: int) -> None:
        super().__init__()
        self.size, self.mask_fill = size, mask_fill

    def make_params(self, flat_inputs: list) -> dict:
        h, w = query_size(flat_inputs)
        return {"padding": [0, 0, max(self.size[1] - w, 0), max(self.size[0] - h, 0)]}

    def transform(self, inpt: torch.Tensor, params: dict) -> torch.Tensor:
        if not any(params["padding"]):
            return inpt
        fill = self.mask_fill if isinstance(inpt, tv_tensors.Mask) else 0
        return self._call_kernel(F.pad, inpt, padding=params["padding"], fill=fill)


def build_train_pipeline(
    augment: AugmentConfig, image_mean: list[float], image_std: list[float], labels: LabelSpec
) -> v2.Compose:
    """The v2 pipeline: (Image uint8 (3, H, W), raw Mask (H, W)) -> (Image float32 (3, *crop), Mask int64 (*crop))."""
    steps = [
        RandomResizeCrop(
            augment.scale, augment.ratio_range, augment.crop_size, augment.cat_max_ratio, labels.class_pixels
        ),
        v2.RandomHorizontalFlip(augment.flip_prob),
        EncodeLabels(labels),
        v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True),
    ]
    if augment.photometric:
        steps.append(PhotoMetricDistortion(augment.brightness, augment.contrast, augment.saturation, augment.hue))
    steps += [
        v2.Normalize(image_mean, image_std, inplace=True),
        PadTo(augment.crop_size, labels.ignore_index),
        v2.ToDtype({tv_tensors.Mask: torch.int64, "others": None}),
    ]
    return v2.Compose(steps)


def item_seed(seed: int, key: int) -> int:
    """A 64-bit seed for item `key` of a run seeded `seed`: well mixed, so neighbouring keys are unrelated."""
    return int(np.random.SeedSequence([seed & (2**63 - 1), key]).generate_state(1, np.uint64)[0])


class TrainTransform:
    """Augment one (image, raw mask) pair with randomness that is a function of (seed, key) alone."""

    def __init__(
        self, augment: AugmentConfig, image_mean: list[float], image_std: list[float], labels: LabelSpec, seed: int
    ) -> None:
        self.pipeline = build_train_pipeline(augment, image_mean, image_std, labels)
        self.seed = seed

    def __call__(self, image: torch.Tensor, mask: torch.Tensor, key: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(pixel_values float32 (3, *crop_size), labels int64 (*crop_size)) from uint8 (3, H, W) and a
        validated raw mask (H, W) (uint8 or int32)."""
        with torch.random.fork_rng(devices=[]):
            # the CPU generator only: torch.manual_seed would also queue CUDA seeding (and trace a stack for it)
            torch.default_generator.manual_seed(item_seed(self.seed, key))
            image, mask = self.pipeline(tv_tensors.Image(image), tv_tensors.Mask(mask))
        return image.as_subclass(torch.Tensor), mask.as_subclass(torch.Tensor)
