"""Prediction: whole-image, sliding-window and multi-scale + flip (TTA), from pixels or from image files.

    scores = predict_scores(model, pixel_values, EvalConfig(mode="slide"))     # (B, K, H, W) at input size
    masks = segtune.segment("outputs/demo", ["a.jpg", "b.jpg"], mode="slide")   # (H, W) class maps per image
    bands = predict_bands(model, open_raster("big.tif"), processor, config)      # (n, W) rows, bounded memory

How to predict is one `EvalConfig` (`recipe.eval`): its defaults are the paper's, and the evaluation,
`segment` and `segtune predict` all read them from there. Every score function returns class
scores at the resolution of the image it was given; callers resize those to the label's native
resolution before the argmax, so scoring never uses a resized label.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from torch import nn

from .errors import DatasetError, RecipeError
from .models.loading import load_for_inference, load_processor
from .raster import ArrayRaster, Raster, RowCache, TiffRaster, is_tiff
from .recipe import EvalConfig
from .tiling import slide_bands

ImageInput = str | Path | Image.Image


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


def _logits(model: nn.Module, pixel_values: torch.Tensor, config: EvalConfig) -> torch.Tensor:
    if config.mode == "slide":
        return slide_logits(model, pixel_values, config.crop_size, config.stride, config.window_batch)
    return whole_logits(model, pixel_values)


@torch.inference_mode()
def predict_scores(model: nn.Module, pixel_values: torch.Tensor, config: EvalConfig) -> torch.Tensor:
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
    model: nn.Module, pixel_values: torch.Tensor, config: EvalConfig, label_size: tuple[int, int] | None = None
) -> torch.Tensor:
    """(B, H', W') class indices, with scores resized to `label_size` (the native label resolution)
    before the argmax."""
    scores = predict_scores(model, pixel_values, config)
    return _upsample(scores, label_size or scores.shape[-2:]).argmax(dim=1)


def pick_device(device: str = "auto") -> torch.device:
    """`auto`: CUDA, then Apple MPS, then CPU."""
    if device != "auto":
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def open_image(image: ImageInput) -> Image.Image:
    """An RGB PIL image from a path or an image.

    Raises:
        DatasetError: the file cannot be read as an image (named).
    """
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    try:
        with Image.open(image) as opened:
            return opened.convert("RGB")
    except (OSError, UnidentifiedImageError) as error:
        raise DatasetError(f"{image}: cannot read the image ({error})") from None


BACKENDS = ("torch", "onnx")


def open_raster(image: ImageInput) -> Raster:
    """An image whose rows are read on demand: a TIFF file band by band (tifffile), anything else decoded whole.

    Raises:
        DatasetError: the file is missing, or cannot be read as an image (named).
    """
    if isinstance(image, (str, Path)) and is_tiff(image):
        return TiffRaster(image)
    return ArrayRaster(open_image(image))


def check_tiling(config: EvalConfig, processor: Any) -> None:
    """Refuse what tiled prediction cannot do the same way as the sliding window on the whole image.

    Raises:
        RecipeError: test-time augmentation, an image processor that resizes, or a stride above the crop.
    """
    if config.tta:
        raise RecipeError("tile: test-time augmentation (tta) rescales and flips the whole image; it is not tiled")
    if getattr(processor, "do_resize", False):
        raise RecipeError(
            f"tile: predicts at each image's own size, but the image processor resizes (size={dict(processor.size)}, "
            "as eval.resize); slide over the resized image without tile, or use a processor with do_resize=False"
        )
    if any(step > side for step, side in zip(config.stride, config.crop_size)):
        raise RecipeError(f"tile: stride {tuple(config.stride)} above crop_size {tuple(config.crop_size)} skips pixels")


@torch.inference_mode()
def predict_bands(model: nn.Module, raster: Raster, processor: Any, config: EvalConfig) -> Iterator[np.ndarray]:
    """Class indices of `raster`, (n, W) int64 bands from the top, holding about one window's height of rows.

    The labels equal `slide_logits` + argmax on the whole image, normalised by `processor`, with
    `config.crop_size`, `config.stride` and `config.window_batch` (segtune/tiling.py says why).

    Raises:
        RecipeError: settings tiling cannot honour (`check_tiling`).
        DatasetError: the image's rows cannot be read (named).
    """
    check_tiling(config, processor)
    weights = next(model.parameters(), None)  # an ONNX Runtime model has none, and takes host tensors
    device, rows = (weights.device if weights is not None else torch.device("cpu")), RowCache(raster)

    def pixels(window: tuple[int, int, int, int]) -> torch.Tensor:
        y1, y2, x1, x2 = window
        # Rescaling and normalising act pixel by pixel: a crop gets the values the whole image would.
        crop = processor(rows.rows(y1, y2)[:, x1:x2], return_tensors="pt", input_data_format="channels_last")
        return crop["pixel_values"].to(device)  # (1, 3, h, w)

    windows = window_grid(raster.height, raster.width, config.crop_size, config.stride)
    for band in slide_bands(
        windows, pixels, lambda crops: whole_logits(model, crops), raster.height, config.window_batch
    ):
        yield band.cpu().numpy()


def segment(
    model: str | Path | nn.Module,
    images: Sequence[ImageInput],
    *,
    processor: Any = None,
    batch_size: int = 4,
    device: str = "auto",
    backend: str = "torch",
    tile: bool = False,
    **settings: Any,
) -> list[np.ndarray]:
    """Class-index maps (H, W), one per image, at each image's own size.

    `model` is a checkpoint directory or Hub id (its saved image processor does the preprocessing), or
    a loaded model, with its `processor` (default: the one saved in `model.name_or_path`, else
    transformers' `SegformerImageProcessor`). `settings` are `EvalConfig` fields (`mode="slide"`,
    `crop_size`, `stride`, `tta=True`, ...), defaulting to its values. Images of equal size are batched.
    `backend="onnx"`, or a path ending in `.onnx`: `model` is an exported model.onnx or the folder
    `segtune export` wrote, run by ONNX Runtime through this same code (segtune/export/runtime.py).
    `tile=True` slides the window (`crop_size`, `stride`; `mode` aside) over one image at a time in bands
    of rows, reading TIFF files band by band: the labels of `mode="slide"` on one image, in bounded
    working memory (`predict_bands`; the returned maps are whole).

    Raises:
        DatasetError: an image cannot be read (named).
        CheckpointError: the model cannot be loaded.
        ExportError: `backend="onnx"` without onnxruntime installed.
        RecipeError: `tile` with settings it cannot honour (`check_tiling`).
        TypeError: a setting that is not an `EvalConfig` field.
        ValueError: an unknown `backend`, or "onnx" with a loaded model rather than a path.
    """
    is_path = isinstance(model, (str, Path))
    if backend not in BACKENDS or (backend == "onnx" and not is_path):
        found = repr(backend) if backend not in BACKENDS else f"'onnx' with a loaded {type(model).__name__}"
        raise ValueError(f"backend: expected one of {list(BACKENDS)}, 'onnx' with a path; found {found}")
    if is_path and (backend == "onnx" or str(model).endswith(".onnx")):
        from .export.runtime import load_onnx

        model, saved = load_onnx(model)
        processor = saved if processor is None else processor
    elif is_path:
        model, processor = load_for_inference(str(model))
    elif processor is None:
        processor = load_processor(model)
    config = dataclasses.replace(EvalConfig(), **settings)
    target = pick_device(device)
    model = model.to(target).eval()
    if tile:
        check_tiling(config, processor)
        tiled = []
        for image in images:
            with open_raster(image) as raster:
                tiled.append(np.concatenate(list(predict_bands(model, raster, processor, config))))
        return tiled
    opened = [open_image(image) for image in images]
    results: list[np.ndarray | None] = [None] * len(opened)
    by_size: dict[tuple[int, int], list[int]] = {}
    for index, image in enumerate(opened):
        by_size.setdefault(image.size, []).append(index)
    for indices in by_size.values():
        for start in range(0, len(indices), batch_size):
            chunk = indices[start : start + batch_size]
            pixels = processor([opened[i] for i in chunk], return_tensors="pt")["pixel_values"].to(target)
            width, height = opened[chunk[0]].size
            for i, label in zip(chunk, predict_labels(model, pixels, config, (height, width)).cpu().numpy()):
                results[i] = label
    return results
