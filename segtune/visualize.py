"""Colour masks with a dataset palette, overlay them, and lay out a grid of sample predictions (with headers and
a legend: segtune/legend.py)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.transforms.v2 import functional as tvF
from torchvision.utils import draw_segmentation_masks, make_grid

from .legend import classes_present, header_band, legend_band, legend_entries, stack

IGNORE_COLOUR = (0, 0, 0)
ImageLike = torch.Tensor | np.ndarray | Image.Image


def as_image_tensor(image: ImageLike) -> torch.Tensor:
    """(3, H, W) uint8 from a PIL image, an (H, W, 3) array, or a (3, H, W) tensor."""
    if isinstance(image, Image.Image):
        image = np.array(image.convert("RGB"))  # a writable copy: torch warns on read-only buffers
    if isinstance(image, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
    return image


def as_mask_tensor(mask: torch.Tensor | np.ndarray | Image.Image) -> torch.Tensor:
    return mask if isinstance(mask, torch.Tensor) else torch.from_numpy(np.array(mask))


def palette_for(config) -> list[list[int]]:
    """A model's class colours: `config.palette` (segtune saves the dataset's), else a fixed default."""
    from .data.labels import default_palette

    palette = getattr(config, "palette", None)
    return [list(c) for c in (palette or default_palette(config.num_labels))]


def _unscored(mask: torch.Tensor, num_classes: int, ignore_index: int) -> torch.Tensor:
    """Where `mask` holds no class (ignored, or outside the palette): drawn in IGNORE_COLOUR."""
    return (mask < 0) | (mask >= num_classes) | (mask == ignore_index)


def colorize(
    mask: torch.Tensor | np.ndarray, palette: Sequence[Sequence[int]], ignore_index: int = 255
) -> torch.Tensor:
    """(H, W) class indices -> (3, H, W) uint8 RGB; `ignore_index` and out-of-palette pixels are black.

    `to_pil(colorize(...))` gives a PIL image.
    """
    table = torch.tensor([list(c) for c in palette] + [list(IGNORE_COLOUR)], dtype=torch.uint8)
    index = as_mask_tensor(mask).long().clone()
    index[_unscored(index, len(palette), ignore_index)] = len(palette)
    return table[index].permute(2, 0, 1)


def overlay(
    image: ImageLike,
    mask: torch.Tensor | np.ndarray,
    palette: Sequence[Sequence[int]],
    alpha: float = 0.5,
    ignore_index: int = 255,
) -> torch.Tensor:
    """Blend the coloured mask over an image (PIL, (H, W, 3) array or (3, H, W) uint8 tensor) with torchvision's
    `draw_segmentation_masks`, one mask per class present; ignored pixels keep the image. Returns (3, H, W) uint8."""
    image, mask = as_image_tensor(image), as_mask_tensor(mask)
    classes = [c for c in mask.unique().tolist() if 0 <= c < len(palette) and c != ignore_index]
    if not classes:
        return image
    masks = mask.unsqueeze(0) == torch.tensor(classes, device=mask.device).view(-1, 1, 1)  # (N, H, W)
    return draw_segmentation_masks(image, masks, alpha=alpha, colors=[tuple(palette[c]) for c in classes])


def to_pil(image: torch.Tensor) -> Image.Image:
    """(3, H, W) uint8 tensor -> PIL image."""
    return Image.fromarray(image.permute(1, 2, 0).contiguous().numpy())


def _to_height(panel: torch.Tensor, height: int, nearest: bool) -> torch.Tensor:
    width = max(1, round(panel.shape[-1] * height / panel.shape[-2]))
    mode = tvF.InterpolationMode.NEAREST if nearest else tvF.InterpolationMode.BILINEAR
    return tvF.resize(panel, [height, width], interpolation=mode, antialias=not nearest)


GRID_TITLES = ("image", "ground truth", "prediction")


def prediction_grid(
    samples: Sequence[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
    palette: Sequence[Sequence[int]],
    ignore_index: int = 255,
    height: int = 256,
    id2label: Mapping[int, str] | None = None,
) -> Image.Image:
    """One row per sample: image | ground truth | prediction, each `height` pixels tall, under a header naming
    the columns and above a legend of the classes present in the labels and predictions shown (names from
    `id2label`, else the class ids).

    `samples` holds (image uint8 (3, H, W), label (H, W), prediction (H, W)).
    """
    rows = [
        [
            _to_height(image, height, nearest=False),
            _to_height(colorize(label, palette, ignore_index), height, nearest=True),
            _to_height(colorize(prediction, palette, ignore_index), height, nearest=True),
        ]
        for image, label, prediction in samples
    ]
    widths = [max(row[column].shape[-1] for row in rows) for column in range(len(GRID_TITLES))]
    rows = [  # each column as wide as its widest panel, so that the headers stand over every row's panels
        torch.cat([F.pad(p, (0, width - p.shape[-1] + 4, 0, 0), value=255) for p, width in zip(row, widths)], dim=-1)
        for row in rows
    ]
    grid = make_grid(torch.stack(rows), nrow=1, padding=4, pad_value=255)
    body = Image.fromarray(grid.permute(1, 2, 0).numpy())
    starts = [4 + sum(widths[:column]) + 4 * column for column in range(len(widths))]  # make_grid's 4 px border
    titles = [(title, x, x + width) for title, x, width in zip(GRID_TITLES, starts, widths)]
    masks = [mask for _, label, prediction in samples for mask in (label, prediction)]
    classes = classes_present(*masks, num_classes=len(palette), ignore_index=ignore_index)
    black = any(bool(_unscored(as_mask_tensor(m), len(palette), ignore_index).any()) for m in masks)
    ignored = (ignore_index, IGNORE_COLOUR) if black else None
    legend = legend_band(legend_entries(classes, id2label, palette, ignored), body.width)
    return stack(header_band(titles, body.width), body, legend)
