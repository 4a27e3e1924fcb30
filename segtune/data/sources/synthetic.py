"""The embedded synthetic dataset: scenes of shapes that a model must tell apart by shape and context.

Class 0 is the background: a smooth, noisy field of random colours. Every other class is one shape
family (disc, bar, rectangle, ring, triangle, cross, diamond, ellipse; past eight classes the families
repeat at other sizes) drawn in a colour around its class hue with noise of sigma 0.18 per channel; 3-5
objects per scene, which may occlude each other. Colours overlap between neighbouring classes and with
the background, so a per-pixel colour lookup does poorly, and hue neighbours always differ in shape.

Measured at 128 px, 6 classes (512 train / 64 eval scenes):
- best per-pixel colour lookup (16^3 RGB bins, fitted on train): 0.48 mIoU;
- segtune's B0 from random init, batch 8, AdamW 1e-3, warmup 100 then linear decay, random resize
  0.75-1.5, no photometric distortion: 0.77 mIoU after 800 steps, 0.80 after 1200 (the README gives the demo's time).

Scenes are a pure function of (seed, split, index) and are written once, as PNG, into the `datasets`
cache through `Dataset.from_generator`; later runs with the same settings reuse the cached files.
"""

from __future__ import annotations

import colorsys
import io
from functools import lru_cache

import datasets
import numpy as np
import PIL.Image

from ...errors import DatasetError
from ...recipe import DataConfig
from ..labels import Color
from .base import FEATURES, IMAGE, LABEL, Source

# Classes take hues in this order, evenly around the circle: compact and thin shapes alternate, so two
# classes whose colours overlap always differ clearly in shape (measured: +0.07 mIoU at the demo budget).
SHAPES = ("disc", "bar", "rectangle", "ring", "triangle", "cross", "diamond", "ellipse")
_SIZE_BANDS = (1.0, 0.65, 1.4)  # scale of each repetition of the shape families
MAX_CLASSES = 1 + len(SHAPES) * len(_SIZE_BANDS)
COLOUR_SIGMA = 0.18  # per-object colour noise around the class hue (the calibrated overlap)
# Part of the cache key: `datasets` fingerprints the generator by name, not by the code it calls, so a
# change to the scenes must bump this or old cached scenes would be served.
SCENE_VERSION = 4
_PIXEL_SIGMA = 0.04
_OBJECTS = (3, 6)  # objects per scene: [low, high)
_SATURATION, _VALUE = 0.75, 0.8  # of each class's base colour (its palette colour), before the colour noise


def load_synthetic(data: DataConfig, seed: int) -> Source:
    """Deterministic train and eval splits of `data.synthetic` scenes, under the recipe's split names.

    The scenes take `data.synthetic.seed` (default 0), not the training seed `seed`: the data stays put
    when training varies.

    Raises:
        DatasetError: more classes than the shape families can tell apart.
    """
    config, train_split, eval_split = data.synthetic, data.train_split, data.eval_split
    classes = config.num_classes
    if not 2 <= classes <= MAX_CLASSES:
        raise DatasetError(
            f"data.synthetic.num_classes: expected 2..{MAX_CLASSES} (background + shape families), found {classes}"
        )
    splits = {}
    for split_id, (split, count) in enumerate(((train_split, config.num_train), (eval_split, config.num_eval))):
        kwargs = {
            "seed": config.seed,
            "split_id": split_id,
            "count": count,
            "size": config.image_size,
            "num_classes": classes,
            "version": SCENE_VERSION,
        }
        splits[split] = datasets.Dataset.from_generator(_scenes, features=FEATURES, gen_kwargs=kwargs, split=split)
    return Source(
        splits=datasets.DatasetDict(splits),
        name="synthetic",
        id2label=class_names(classes),
        palette=class_palette(classes),
    )


def class_names(num_classes: int) -> dict[int, str]:
    """0: background, then the shape families (with a size suffix once they repeat)."""
    names = {0: "background"}
    for k in range(1, num_classes):
        family, band = (k - 1) % len(SHAPES), (k - 1) // len(SHAPES)
        names[k] = SHAPES[family] + ("", "_small", "_large")[band]
    return names


def class_hues(num_classes: int) -> np.ndarray:
    """Hue in [0, 1) of each object class (index 0, the background, has none: NaN)."""
    return np.concatenate([[np.nan], np.arange(num_classes - 1) / (num_classes - 1)])


def class_palette(num_classes: int) -> tuple[Color, ...]:
    """Display colours: grey for the background, each class's mean colour otherwise."""
    colours = [(128, 128, 128)]
    for hue in class_hues(num_classes)[1:]:
        colours.append(tuple(int(round(255 * c)) for c in colorsys.hsv_to_rgb(hue, _SATURATION, _VALUE)))
    return tuple(colours)


def _scenes(seed: int, split_id: int, count: int, size: int, num_classes: int, version: int):
    for index in range(count):
        image, mask = make_scene(np.random.default_rng([seed, split_id, index]), size, num_classes)
        yield {IMAGE: {"bytes": _png(image), "path": None}, LABEL: {"bytes": _png(mask), "path": None}}


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    PIL.Image.fromarray(array).save(buffer, format="PNG", compress_level=1)  # fast; noisy pixels barely compress
    return buffer.getvalue()


def make_scene(rng: np.random.Generator, size: int, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """One scene: image uint8 (size, size, 3) and mask uint8 (size, size) of class ids."""
    yy, xx = _grid(size)
    image = _background(rng, size)
    mask = np.zeros((size, size), dtype=np.uint8)
    hues = class_hues(num_classes)
    for _ in range(int(rng.integers(*_OBJECTS))):
        k = int(rng.integers(1, num_classes))
        inside = _shape(rng, k, size, yy, xx)
        base = np.array(colorsys.hsv_to_rgb(hues[k], _SATURATION, _VALUE))
        colour = base + rng.normal(0.0, COLOUR_SIGMA, 3)
        # a gentle linear shading across the scene, so an object is not one flat colour
        gy, gx = 0.15 * rng.normal(size=2) / size
        shading = 1.0 + gy * (yy[inside] - size / 2) + gx * (xx[inside] - size / 2)
        image[inside] = colour * shading[:, None]  # later objects occlude earlier ones
        mask[inside] = k
    image += _PIXEL_SIGMA * rng.standard_normal(image.shape, dtype=np.float32)
    return (np.clip(image, 0.0, 1.0) * 255 + 0.5).astype(np.uint8), mask


@lru_cache(maxsize=4)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    return yy, xx


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A smooth field of random colours (a 4x4 grid, bilinearly upsampled): grey levels pushed towards
    any hue, so the background takes every class's colour somewhere, if less saturated on average."""
    grey = rng.uniform(0.2, 0.85, (4, 4, 1))
    grid = (grey + rng.uniform(-0.5, 0.5, (4, 4, 3))).clip(0, 1).astype(np.float32)
    up = _upsampler(size)  # (size, 4)
    rows = (up @ grid.reshape(4, 12)).reshape(size, 4, 3).transpose(0, 2, 1)  # (size, 3, 4)
    return np.ascontiguousarray((rows @ up.T).transpose(0, 2, 1))  # (size, size, 3)


@lru_cache(maxsize=4)
def _upsampler(size: int) -> np.ndarray:
    """Linear interpolation weights from 4 grid points to `size` pixels."""
    position = np.linspace(0, 3, size)
    return np.clip(1 - np.abs(position[:, None] - np.arange(4)[None, :]), 0, 1).astype(np.float32)


def _shape(rng: np.random.Generator, k: int, size: int, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """Boolean mask of one object of class k at a random place, size and angle.

    Sizes are fractions of the image side. Thin parts (bars, rings, crosses) stay >= 7 px wide at 128 px:
    the model predicts at 1/4 resolution, and thinner strokes would cap their IoU, not teach shape.
    """
    family, band = SHAPES[(k - 1) % len(SHAPES)], (k - 1) // len(SHAPES)
    s = size * _SIZE_BANDS[band]
    cy, cx = rng.uniform(0.1, 0.9, 2) * size
    theta = rng.uniform(0, np.pi)
    u = (xx - cx) * np.cos(theta) + (yy - cy) * np.sin(theta)  # rotated coordinates about the centre
    v = (yy - cy) * np.cos(theta) - (xx - cx) * np.sin(theta)
    if family == "disc":
        return u * u + v * v < (rng.uniform(0.09, 0.18) * s) ** 2
    if family == "rectangle":
        a, b = rng.uniform(0.08, 0.2, 2) * s
        return (np.abs(u) < a) & (np.abs(v) < b)
    if family == "triangle":
        return _triangle(rng.uniform(0.14, 0.25) * s, u, v)
    if family == "bar":
        return (np.abs(u) < rng.uniform(0.2, 0.37) * s) & (np.abs(v) < rng.uniform(0.028, 0.046) * s)
    if family == "ring":
        outer = rng.uniform(0.13, 0.21) * s
        r2 = u * u + v * v
        return (r2 < outer**2) & (r2 > (outer - rng.uniform(0.052, 0.075) * s) ** 2)
    if family == "cross":
        a, b = rng.uniform(0.115, 0.2) * s, rng.uniform(0.029, 0.046) * s
        return ((np.abs(u) < a) & (np.abs(v) < b)) | ((np.abs(v) < a) & (np.abs(u) < b))
    if family == "diamond":
        a, b = rng.uniform(0.1, 0.2, 2) * s
        return np.abs(u) / a + np.abs(v) / b < 1
    a = rng.uniform(0.14, 0.23) * s  # ellipse: elongated, so it is not a disc
    b = a * rng.uniform(0.3, 0.5)
    return (u / a) ** 2 + (v / b) ** 2 < 1


def _triangle(radius: float, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """An equilateral triangle of circumradius `radius`, as the intersection of three half-planes."""
    inside = np.ones(u.shape, dtype=bool)
    for angle in (0.0, 2 * np.pi / 3, 4 * np.pi / 3):
        # each edge's outward normal points at `angle`; the inradius is half the circumradius
        inside &= u * np.cos(angle) + v * np.sin(angle) < radius / 2
    return inside
