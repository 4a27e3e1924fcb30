"""Training augmentation as SegFormer's mmseg pipeline: the geometry in the DataLoader worker, in uint8.

mmseg (paper) order, every value from `recipe.augment`:

    RandomResize(scale, ratio_range, keep_ratio) -> RandomCrop(crop_size, cat_max_ratio) -> RandomFlip
    -> PhotoMetricDistortion -> Normalize -> Pad(crop_size, image 0, mask ignore_index)

A worker does the geometric part, in uint8: the resized crop of the source region, the flip, and the
padding to `crop_size`. It draws the photometric parameters in mmseg's order and hands everything over
as a compact sample (`TrainTransform.__call__`): 3 + 1 bytes per pixel instead of float32 pixels and
int64 labels (20 bytes), so the DataLoader's transport stops being the bottleneck on a GPU. The
photometric distortion, normalisation and the zeroing of the padding in normalised space then run on
the whole batch on the training device (`batch_preprocessor.TrainBatchPreprocessor`), as mmseg's data
preprocessor does.

Image and mask go through the same v2 pipeline as `tv_tensors.Image` and `tv_tensors.Mask`, so geometry
is shared and masks are always resampled nearest-neighbour. The mask enters raw (validated, not yet
mapped) and `EncodeLabels` maps it to train ids through the LabelSpec once, after the crop: a per-pixel
lookup commutes with nearest resampling, cropping and flipping, and the crop is a fraction of the
full mask.

Randomness: `TrainTransform(image, mask, key)` seeds torch's generator from (seed, key) inside
`fork_rng`, so an item's augmentation, photometric parameters included, depends on nothing else: not
the worker, its seed, the process, or which items came before.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torchvision.transforms.v2.functional as F
from torchvision import tv_tensors
from torchvision.transforms import v2

from ..recipe import AugmentConfig
from .labels import LabelSpec

_CAT_MAX_TRIES = 10  # mmseg re-draws a crop up to 10 times while one class dominates it

# The photometric parameters of one sample, in this order; identity values where mmseg's coin said no.
PHOTOMETRIC_PARAMS = ("brightness", "contrast_first", "contrast", "saturation", "hue")


def _uniform(low: float, high: float) -> float:
    return float(torch.empty(()).uniform_(low, high)) if high > low else float(low)


def _coin(p: float = 0.5) -> bool:
    return bool(torch.rand(()) < p)


def _image(flat_inputs: list) -> tv_tensors.Image:
    return next(i for i in flat_inputs if isinstance(i, tv_tensors.Image))


class RandomRescaleCrop(v2.Transform):
    """mmseg's `RandomResize(scale, ratio_range, keep_ratio=True)` then `RandomCrop(crop_size, cat_max_ratio)`.

    Not torchvision's `RandomResizedCrop` (a crop of random area and aspect ratio, resized to a fixed size):
    here the aspect ratio is kept and the crop is at most `crop_size`.

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
        h, w = F.get_size(_image(flat_inputs))
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


class PadTo(v2.Transform):
    """Pad bottom and right up to `size` (h, w): images with 0, masks with `mask_fill` (mmseg's Pad)."""

    def __init__(self, size: tuple[int, int], mask_fill: int) -> None:
        super().__init__()
        self.size, self.mask_fill = size, mask_fill

    def make_params(self, flat_inputs: list) -> dict:
        h, w = F.get_size(_image(flat_inputs))
        return {"padding": [0, 0, max(self.size[1] - w, 0), max(self.size[0] - h, 0)]}

    def transform(self, inpt: torch.Tensor, params: dict) -> torch.Tensor:
        if not any(params["padding"]):
            return inpt
        fill = self.mask_fill if isinstance(inpt, tv_tensors.Mask) else 0
        return self._call_kernel(F.pad, inpt, padding=params["padding"], fill=fill)


def build_geometry(augment: AugmentConfig, labels: LabelSpec) -> v2.Compose:
    """The worker's v2 pipeline: (Image uint8 (3, H, W), raw Mask (H, W)) -> (Image uint8 (3, h, w), Mask of
    train ids (h, w)) with (h, w) at most `crop_size`."""
    return v2.Compose(
        [
            RandomRescaleCrop(
                augment.scale, augment.ratio_range, augment.crop_size, augment.cat_max_ratio, labels.class_pixels
            ),
            v2.RandomHorizontalFlip(augment.flip_prob),
            EncodeLabels(labels),
        ]
    )


def draw_photometric(augment: AugmentConfig) -> torch.Tensor:
    """mmseg's PhotoMetricDistortion parameters for one sample, float32 (5,) in `PHOTOMETRIC_PARAMS` order.

    Drawn in mmseg's order (brightness, mode, contrast, saturation, hue), each step with probability 0.5;
    a step not taken gets its identity value (0, 1, 1, 0). brightness: additive delta in [0, 1] units; contrast_first: 1 when
    contrast comes before the colour steps; contrast and saturation: factors; hue: a fraction of the
    colour circle.
    """
    brightness = _uniform(-augment.brightness, augment.brightness) if _coin() else 0.0
    contrast_first = _coin()
    contrast = _uniform(*augment.contrast) if _coin() else 1.0
    saturation = _uniform(*augment.saturation) if _coin() else 1.0
    hue = _uniform(-augment.hue, augment.hue) if _coin() else 0.0
    return torch.tensor([brightness, float(contrast_first), contrast, saturation, hue])


def item_seed(seed: int, key: int) -> int:
    """A 64-bit seed for item `key` of a run seeded `seed`: well mixed, so neighbouring keys are unrelated."""
    return int(np.random.SeedSequence([seed & (2**63 - 1), key]).generate_state(1, np.uint64)[0])


class TrainTransform:
    """Augment one (image, raw mask) pair with randomness that is a function of (seed, key) alone."""

    def __init__(self, augment: AugmentConfig, labels: LabelSpec, seed: int) -> None:
        self.geometry = build_geometry(augment, labels)
        self.pad = PadTo(augment.crop_size, labels.ignore_index)
        self.augment, self.seed = augment, seed

    def __call__(self, image: torch.Tensor, mask: torch.Tensor, key: int) -> dict[str, torch.Tensor]:
        """The compact training sample of uint8 `image` (3, H, W) and a validated raw `mask` (H, W):

        - "image": uint8 (3, *crop_size), padded with 0 at the bottom and right;
        - "labels": train ids (*crop_size) of `LabelSpec.mask_dtype` (uint8 for most datasets), padded
          with the ignore index;
        - "photometric": float32 (5,), the parameters `draw_photometric` drew; left out under
          `augment.photometric: false`, which is how the batch preprocessor knows to skip the distortion;
        - "valid_size": int32 (2,), (h, w) of the image before padding, so the device can give the
          padding 0 in normalised space, as mmseg pads after normalising.
        """
        with torch.random.fork_rng(devices=[]):
            # the CPU generator only: torch.manual_seed would also queue CUDA seeding (and trace a stack for it)
            torch.default_generator.manual_seed(item_seed(self.seed, key))
            image, mask = self.geometry(tv_tensors.Image(image), tv_tensors.Mask(mask))
            photometric = draw_photometric(self.augment) if self.augment.photometric else None
        valid_size = torch.tensor(image.shape[-2:], dtype=torch.int32)
        image, mask = self.pad(image, mask)
        sample = {"image": image.as_subclass(torch.Tensor), "labels": mask.as_subclass(torch.Tensor)}
        if photometric is not None:
            sample["photometric"] = photometric
        return {**sample, "valid_size": valid_size}
