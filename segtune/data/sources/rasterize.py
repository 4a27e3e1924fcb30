"""Shapes drawn by labelling tools -> one class-id mask per image, through pycocotools.

Every export source (COCO, LabelMe, YOLO) turns its shapes into `Shape`s and calls `paint`: one rasteriser,
one overlap rule. Polygons go through pycocotools' `frPyObjects` (the rasteriser COCO's own areas come
from): a pixel belongs to a polygon as COCO decides it, so masks agree with the `area` fields of COCO
files, and areas match the drawn shapes' analytic areas within 1% from about 1,000 pixels up (tested).

Overlaps: the larger shape is painted first and the smaller one on top (ties: later in the file on top).
Annotation order in an export is the tool's (creation order, an export's own sort), not a depth order, while
area is stable across tools and re-exports; and a small object drawn over a large region (a person on a
road, a window on a wall) is nearly always in front of it, whereas the reverse would erase it entirely.

Crowd regions (COCO `iscrowd: 1`) are painted first, as the ignore index, so the loss and the metric skip
them, as mmsegmentation and detectron2 treat crowd for semantic segmentation: a crowd region is a coarse
outline of many instances with background between them, which, painted as the class, would teach wrong
boundaries. A non-crowd instance inside a crowd region keeps its class (painted after it).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import pycocotools.mask as mask_utils

from ...errors import DatasetError

Rle = dict[str, Any]  # pycocotools' run-length encoding: {"size": [h, w], "counts": bytes | list[int]}


@dataclass(frozen=True)
class Shape:
    """One region to paint: `value` (a class id or the ignore index) over the pixels of `rle`."""

    value: int
    rle: Rle
    crowd: bool = False

    @property
    def area(self) -> int:
        return int(mask_utils.area(self.rle))


def check_polygon(points: Sequence[float], where: str) -> None:
    """Refuse flat coordinates `[x0, y0, x1, y1, ...]` that are not a polygon (pycocotools reads 4 numbers as a box).

    Raises:
        DatasetError: fewer than 3 (x, y) points, or an odd count; naming `where`.
    """
    if len(points) < 6 or len(points) % 2:
        raise DatasetError(
            f"{where}: polygon with {len(points) / 2:g} points; a polygon needs at least 3 (x, y) points"
        )


def polygon_rle(points: Sequence[float], height: int, width: int) -> Rle:
    """The RLE of one polygon given as flat pixel coordinates `[x0, y0, x1, y1, ...]` (corners at integers).

    Callers check that there are at least 3 points (`check_polygon`): pycocotools reads a 4-number list as a box.
    """
    return mask_utils.merge(mask_utils.frPyObjects([[float(v) for v in points]], height, width))


def rle_of(segmentation: dict[str, Any], height: int, width: int) -> Rle:
    """A COCO RLE segmentation, compressed (`counts` a string) or not (`counts` a list), as a compressed RLE."""
    if isinstance(segmentation["counts"], list):
        return mask_utils.frPyObjects(segmentation, height, width)
    return {"size": segmentation["size"], "counts": segmentation["counts"]}


def paint(shapes: Sequence[Shape], height: int, width: int, background: int = 0) -> np.ndarray:
    """The (height, width) mask of `shapes` over `background`: uint8, or uint16 when a value exceeds 255.

    Crowd shapes first, then the others from the largest area to the smallest (see the module docstring).
    """
    values = [background, *(shape.value for shape in shapes)]
    mask = np.full((height, width), background, dtype=np.uint8 if max(values) <= 255 else np.uint16)
    crowd = [shape for shape in shapes if shape.crowd]
    # sorted() is stable: among equal areas, a later shape stays later and ends on top
    ordered = crowd + sorted((shape for shape in shapes if not shape.crowd), key=lambda shape: -shape.area)
    for shape in ordered:
        mask[_decode(shape.rle)] = shape.value
    return mask


def _decode(rle: Rle) -> np.ndarray:
    """The boolean (H, W) pixels of an RLE."""
    with warnings.catch_warnings():
        # pycocotools 2.0.x's decode asks NumPy 2 for `copy=False` on its own array type, which NumPy answers
        # with a DeprecationWarning per call; the pixels are right either way
        warnings.simplefilter("ignore", DeprecationWarning)
        return mask_utils.decode(rle).astype(bool)


def write_mask(path: Path, mask: np.ndarray) -> None:
    """Save a class-id mask as a PNG (8-bit, or 16-bit for uint16 masks), creating its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    PIL.Image.fromarray(mask).save(path)
