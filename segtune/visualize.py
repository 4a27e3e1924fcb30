"""Colour masks with a dataset palette, overlay them, and lay out a grid of sample predictions."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.transforms.v2 import functional as tvF
from torchvision.utils import make_grid

IGNORE_COLOUR = (0, 0, 0)


def colorize(mask: torch.Tensor, palette: Sequence[Sequence[int]], ignore_index: int = 255) -> torch.Tensor:
    """(H, W) class indices -> (3, H, W) uint8 RGB; ignored and out-of-palette pixels are black."""
    table = torch.tensor([list(c) for c in palette] + [list(IGNORE_COLOUR)], dtype=torch.uint8)
    index = mask.long().clone()
    index[(index < 0) | (index >= len(palette))] = len(palette)
    return table[index].permute(2, 0, 1)


def overlay(image: torch.Tensor, mask: torch.Tensor, palette: Sequence[Sequence[int]], alpha: float = 0.5,
            ignore_index: int = 255) -> torch.Tensor:
    """Blend the coloured mask over a (3, H, W) uint8 image; ignored pixels keep the image."""
    coloured = colorize(mask, palette, ignore_index).float()
    blended = image.float() * (1 - alpha) + coloured * alpha
    keep = ((mask < 0) | (mask >= len(palette)) | (mask == ignore_index)).unsqueeze(0)
    return torch.where(keep, image.float(), blended).round().clamp(0, 255).to(torch.uint8)


def _to_height(panel: torch.Tensor, height: int, nearest: bool) -> torch.Tensor:
    width = max(1, round(panel.shape[-1] * height / panel.shape[-2]))
    mode = tvF.InterpolationMode.NEAREST if nearest else tvF.InterpolationMode.BILINEAR
    return tvF.resize(panel, [height, width], interpolation=mode, antialias=not nearest)


def prediction_grid(samples: Sequence[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
                    palette: Sequence[Sequence[int]], ignore_index: int = 255, height: int = 256) -> Image.Image:
    """One row per sample: image | ground truth | prediction, each `height` pixels tall.

    `samples` holds (image uint8 (3, H, W), label (H, W), prediction (H, W)).
    """
    rows = []
    for image, label, prediction in samples:
        panels = [
            _to_height(image, height, nearest=False),
            _to_height(colorize(label, palette, ignore_index), height, nearest=True),
            _to_height(colorize(prediction, palette, ignore_index), height, nearest=True),
        ]
        rows.append(torch.cat([F.pad(p, (0, 4, 0, 0), value=255) for p in panels], dim=-1))
    width = max(r.shape[-1] for r in rows)
    rows = [F.pad(r, (0, width - r.shape[-1], 0, 0), value=255) for r in rows]
    grid = make_grid(torch.stack(rows), nrow=1, padding=4, pad_value=255)
    return Image.fromarray(grid.permute(1, 2, 0).numpy())
