"""Whole-image, sliding-window and multi-scale + flip (TTA) prediction.

Every function returns class scores at the resolution of the image it was given; callers resize
those to the label's native resolution before the argmax, so scoring never uses a resized label.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .recipe import EvalConfig


@dataclass(frozen=True)
class InferenceConfig:
    """How to turn an image into class scores (mirrors `EvalConfig`)."""

    mode: str = "whole"  # whole | slide
    crop_size: tuple[int, int] = (1024, 1024)
    stride: tuple[int, int] = (768, 768)
    tta: bool = False
    tta_scales: tuple[float, ...] = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)
    tta_flip: bool = True
    window_batch: int = 4  # sliding windows per forward pass

    @classmethod
    def from_eval(cls, config: EvalConfig) -> InferenceConfig:
        return cls(config.mode, config.crop_size, config.stride, config.tta, config.tta_scales, config.tta_flip)


def _upsample(scores: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(scores.shape[-2:]) == tuple(size):
        return scores
    return F.interpolate(scores, size=size, mode="bilinear", align_corners=False)


def whole_logits(model: nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) -> (B, K, H, W) logits, in fp32."""
    return _upsample(model(pixel_values=pixel_values).logits.float(), pixel_values.shape[-2:])


def window_grid(
    height: int, width: int, crop: tuple[int, int], stride: tuple[int, int]
) -> list[tuple[int, int, int, int]]:
    """Windows (y1, y2, x1, x2) covering the image, as mmseg's slide_inference: the last one per axis
    is shifted back inside the image, and images smaller than the crop get one window."""
    rows = max(height - crop[0] + stride[0] - 1, 0) // stride[0] + 1
    cols = max(width - crop[1] + stride[1] - 1, 0) // stride[1] + 1
    windows = []
    for row in range(rows):
        for col in range(cols):
            y2, x2 = min(row * stride[0] + crop[0], height), min(col * stride[1] + crop[1], width)
            windows.append((max(y2 - crop[0], 0), y2, max(x2 - crop[1], 0), x2))
    return windows


def slide_logits(
    model: nn.Module, pixel_values: torch.Tensor, crop: tuple[int, int], stride: tuple[int, int], window_batch: int = 4
) -> torch.Tensor:
    """(B, 3, H, W) -> (B, K, H, W): overlapping windows, logits averaged where they overlap."""
    batch, _, height, width = pixel_values.shape
    windows = window_grid(height, width, crop, stride)
    total, count = None, pixel_values.new_zeros((1, 1, height, width))
    for start in range(0, len(windows), window_batch):
        chunk = windows[start : start + window_batch]
        crops = torch.cat([pixel_values[:, :, y1:y2, x1:x2] for y1, y2, x1, x2 in chunk])  # (n*B, 3, h, w)
        scores = whole_logits(model, crops).split(batch)
        for (y1, y2, x1, x2), score in zip(chunk, scores):
            if total is None:
                total = score.new_zeros((batch, score.shape[1], height, width))
            total[:, :, y1:y2, x1:x2] += score
            count[:, :, y1:y2, x1:x2] += 1
    return total / count


def _logits(model: nn.Module, pixel_values: torch.Tensor, config: InferenceConfig) -> torch.Tensor:
    if config.mode == "slide":
        return slide_logits(model, pixel_values, config.crop_size, config.stride, config.window_batch)
    return whole_logits(model, pixel_values)


@torch.inference_mode()
def predict_scores(model: nn.Module, pixel_values: torch.Tensor, config: InferenceConfig) -> torch.Tensor:
    """Class scores (B, K, H, W) at the input resolution: logits, or with TTA the mean softmax
    over scales and flips (as mmseg's SegTTAModel)."""
    if not config.tta:
        return _logits(model, pixel_values, config)
    size = pixel_values.shape[-2:]
    total, views = None, 0
    for scale in config.tta_scales:
        scaled = _upsample(pixel_values, (round(size[0] * scale), round(size[1] * scale)))
        for flip in (False, True) if config.tta_flip else (False,):
            image = scaled.flip(-1) if flip else scaled
            scores = _logits(model, image, config)
            scores = _upsample(scores.flip(-1) if flip else scores, size).softmax(dim=1)
            total, views = (scores if total is None else total + scores), views + 1
    return total / views


def predict_labels(
    model: nn.Module, pixel_values: torch.Tensor, config: InferenceConfig, label_size: tuple[int, int] | None = None
) -> torch.Tensor:
    """(B, H', W') class indices, with scores resized to `label_size` (the native label resolution)
    before the argmax."""
    scores = predict_scores(model, pixel_values, config)
    return _upsample(scores, label_size or scores.shape[-2:]).argmax(dim=1)
