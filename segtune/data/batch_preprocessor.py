"""The training batch on the device: photometric distortion, normalisation and padding, batched.

mmseg's `SegDataPreProcessor` idea: DataLoader workers hand over compact uint8 crops (`TrainTransform`),
and the training device turns a whole batch into model inputs in a few batched kernels:

    preprocess = TrainBatchPreprocessor(processor.image_mean, processor.image_std).to(device)   # once
    batch = next(loader)                           # on the device: image uint8 (B, 3, h, w), labels, params
    pixel_values, labels = preprocess(batch)       # float32 (B, 3, h, w) normalised, int64 (B, h, w)

As mmseg's data preprocessor, it is an `nn.Module` whose mean and std are buffers: they move to the
training device with `.to(device)` once, not on every call.

Per sample, exactly mmseg's steps on [0, 1] values (mmseg works on [0, 255], the same up to the scale):
brightness (add, clip), contrast (multiply, clip; before or after the colour steps), saturation (blend
with the grey image, clip), hue (a turn of the colour circle, clip), then ImageNet normalisation, then
the padding set to 0 (the mean colour), as mmseg pads after normalising. The parameters were drawn in
the worker from the (seed, key) generator, so the result stays a pure function of (seed, key). Whether
to distort at all is decided once, by the worker's transform: a batch without "photometric" parameters
(`augment.photometric: false`) is only normalised.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torchvision.transforms.v2.functional as F
from torch import nn

from .carry import raise_carried_error

# RGB -> YIQ (NTSC). Turning the hue is rotating the (I, Q) chroma plane about the luma axis.
_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], dtype=torch.float64)
_YIQ_INVERSE = torch.linalg.inv(_YIQ)


def hue_rotation(fractions: torch.Tensor) -> torch.Tensor:
    """(B, 3, 3) RGB matrices that turn the hue by `fractions` (B,) of the colour circle.

    A rotation of the YIQ chroma plane (as NVIDIA DALI's and MXNet's hue jitter): one 3x3 matrix per image,
    a fraction of the cost of torchvision's `adjust_hue` HSV round trip (measured in the README); mmseg turns
    the hue in OpenCV's HSV. Both keep grey pixels grey and turn colours the same way (red towards yellow for fraction > 0);
    YIQ keeps luma where HSV keeps the largest channel.
    """
    angle = -2 * math.pi * fractions.double()  # negative angle in (I, Q) turns red towards yellow, as HSV does
    cos, sin, one, zero = angle.cos(), angle.sin(), torch.ones_like(angle), torch.zeros_like(angle)
    rotation = torch.stack(
        [torch.stack([one, zero, zero], -1), torch.stack([zero, cos, -sin], -1), torch.stack([zero, sin, cos], -1)], -2
    )  # (B, 3, 3)
    return _YIQ_INVERSE.to(angle.device) @ rotation @ _YIQ.to(angle.device)


def rotate_hue(images: torch.Tensor, fractions: torch.Tensor) -> torch.Tensor:
    """Float RGB images (B, 3, H, W) in [0, 1] with their hue turned by `fractions` (B,), clipped to [0, 1]."""
    matrices = hue_rotation(fractions).to(images.dtype)  # (B, 3, 3)
    return torch.einsum("bij,bjhw->bihw", matrices, images).clamp_(0.0, 1.0)


def photometric_distortion(images: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """mmseg's PhotoMetricDistortion on float images (B, 3, H, W) in [0, 1], with per-sample `params` (B, 5).

    `params` columns are `transforms.PHOTOMETRIC_PARAMS`; identity values leave a step without effect (hue
    is skipped exactly where it is 0). Values are clipped to [0, 1] after each step, as mmseg clips to
    [0, 255]. Works in place on `images`.
    """
    brightness, contrast_first, contrast, saturation, hue = (
        column.view(-1, 1, 1, 1).to(images.dtype) for column in params.unbind(1)
    )
    first = contrast_first.bool()
    before, after = torch.where(first, contrast, 1.0), torch.where(first, 1.0, contrast)
    if _taken(brightness, 0.0):
        images = images.add_(brightness).clamp_(0.0, 1.0)
    if _taken(before, 1.0):
        images = images.mul_(before).clamp_(0.0, 1.0)
    if _taken(saturation, 1.0):
        grey = F.rgb_to_grayscale(images)  # torchvision's weights, as its adjust_saturation
        images = images.mul_(saturation).add_(grey * (1.0 - saturation)).clamp_(0.0, 1.0)
    if _taken(hue, 0.0):
        images = torch.where(hue != 0, rotate_hue(images, hue.view(-1)), images)
    if _taken(after, 1.0):
        images = images.mul_(after).clamp_(0.0, 1.0)
    return images


def _taken(values: torch.Tensor, identity: float) -> bool:
    """Whether any sample takes a step (any value other than `identity`); see `_maybe_any`."""
    return _maybe_any(values != identity)


def _maybe_any(flags: torch.Tensor) -> bool:
    """`flags.any()`, asked on the CPU only (a pass nobody needs costs a whole pass there); on an accelerator
    the answer would make the CPU wait, so True: the step runs, and where it is an identity it changes nothing."""
    return flags.device.type != "cpu" or bool(flags.any())


class TrainBatchPreprocessor(nn.Module):
    """Compact training batches -> (pixel_values float32 (B, 3, h, w), labels int64 (B, h, w)) on their device."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, image_mean: Sequence[float], image_std: Sequence[float]) -> None:
        super().__init__()
        # Not persistent: they come from the image processor, which is saved with the model already.
        self.register_buffer("mean", torch.tensor(image_mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(image_std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Raises DatasetError when a worker carried one in the batch (see `carry.raise_carried_error`)."""
        raise_carried_error(batch)
        images = batch["image"].to(torch.float32).div_(255.0)
        if "photometric" in batch:
            images = photometric_distortion(images, batch["photometric"])
        images = images.sub_(self.mean).div_(self.std)
        padding = _padding(batch["valid_size"], images.shape[-2:])
        if _maybe_any(padding):
            images = images.masked_fill_(padding, 0.0)
        return images, batch["labels"].long()


def _padding(valid_size: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """(B, 1, H, W) bool: True on the padding, outside each image's (h, w) before padding."""
    rows = torch.arange(shape[0], device=valid_size.device).view(1, -1, 1)
    cols = torch.arange(shape[1], device=valid_size.device).view(1, 1, -1)
    inside = (rows < valid_size[:, 0].view(-1, 1, 1)) & (cols < valid_size[:, 1].view(-1, 1, 1))
    return ~inside.unsqueeze(1)


__all__ = ["TrainBatchPreprocessor", "hue_rotation", "photometric_distortion", "rotate_hue"]
