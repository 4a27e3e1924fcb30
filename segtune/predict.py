"""Predict segmentation maps for images with any checkpoint: colour masks, overlays, raw class indices.

python -m segtune.predict --model outputs/demo images/*.jpg --out predictions/
python -m segtune.predict --model user/segformer-b0-city city.png --out out/ --mode slide --raw

import segtune
masks = segtune.predict("outputs/demo", ["a.jpg", "b.jpg"])   # list of (H, W) class-index arrays
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .errors import USER_ERRORS, DatasetError
from .inference import InferenceConfig, predict_labels
from .models.loading import load_for_inference
from .visualize import colorize, overlay, palette_for, to_pil

logger = logging.getLogger(__name__)
ImageInput = str | Path | Image.Image


def pick_device(device: str = "auto") -> torch.device:
    """`auto`: CUDA, then Apple MPS, then CPU."""
    if device != "auto":
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def _open(image: ImageInput) -> Image.Image:
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    try:
        with Image.open(image) as opened:
            return opened.convert("RGB")
    except (OSError, UnidentifiedImageError) as error:
        raise DatasetError(f"{image}: cannot read the image ({error})") from None


def _batches(items: list, size: int) -> list[list]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def predict(
    model: str | Path | torch.nn.Module,
    images: Sequence[ImageInput],
    *,
    mode: str = "whole",
    crop_size: tuple[int, int] = (1024, 1024),
    stride: tuple[int, int] = (768, 768),
    batch_size: int = 4,
    device: str = "auto",
    processor=None,
) -> list[np.ndarray]:
    """Class-index maps (H, W), one per image, at each image's own size.

    `model` is a checkpoint directory or Hub id (its saved image processor does the preprocessing),
    or a loaded model together with `processor`. Images of equal size after preprocessing are batched.

    Raises:
        DatasetError: an image cannot be read (named).
        CheckpointError: the model cannot be loaded.
    """
    if isinstance(model, (str, Path)):
        model, processor = load_for_inference(str(model))
    target = pick_device(device)
    model = model.to(target).eval()
    config = InferenceConfig(mode=mode, crop_size=tuple(crop_size), stride=tuple(stride))
    opened = [_open(image) for image in images]
    results: list[np.ndarray | None] = [None] * len(opened)
    by_size: dict[tuple[int, int], list[int]] = {}
    for index, image in enumerate(opened):
        by_size.setdefault(image.size, []).append(index)
    for indices in by_size.values():
        for chunk in _batches(indices, batch_size):
            pixels = processor([opened[i] for i in chunk], return_tensors="pt")["pixel_values"].to(target)
            width, height = opened[chunk[0]].size
            labels = predict_labels(model, pixels, config, label_size=(height, width)).cpu().numpy()
            for i, label in zip(chunk, labels):
                results[i] = label
    return results


def write_prediction(
    image: Image.Image, label: np.ndarray, palette: list, out: Path, stem: str, raw: bool
) -> list[Path]:
    """Colour mask, overlay and (optionally) raw class-index PNG for one image; return the paths."""
    written = [out / f"{stem}_mask.png", out / f"{stem}_overlay.png"]
    to_pil(colorize(label, palette)).save(written[0])
    to_pil(overlay(image, label, palette)).save(written[1])
    if raw:
        written.append(out / f"{stem}_labels.png")
        dtype = np.uint8 if label.max(initial=0) < 256 else np.uint16
        Image.fromarray(label.astype(dtype)).save(written[-1])
    return written


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Predict segmentation maps with a SegFormer checkpoint.")
    parser.add_argument("--model", required=True, help="checkpoint directory or Hub repo id")
    parser.add_argument("images", nargs="+", help="image files")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--raw", action="store_true", help="also write the class-index PNG")
    parser.add_argument("--mode", choices=("whole", "slide"), default="whole")
    parser.add_argument("--crop-size", type=int, nargs=2, default=(1024, 1024), metavar=("H", "W"))
    parser.add_argument("--stride", type=int, nargs=2, default=(768, 768), metavar=("H", "W"))
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--device", default="auto", help="auto (CUDA, MPS, CPU), cpu, cuda, cuda:1 ...")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Write predictions for every readable image; report unreadable ones by name; exit 1 if any failed."""
    args = parse_args(argv)
    try:
        model, processor = load_for_inference(args.model)
    except USER_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    failed = []
    readable = []
    for path in args.images:
        try:
            readable.append((Path(path), _open(path)))
        except USER_ERRORS as error:
            failed.append(str(error))
    labels = predict(
        model,
        [image for _, image in readable],
        mode=args.mode,
        crop_size=args.crop_size,
        stride=args.stride,
        batch_size=args.batch_size,
        device=args.device,
        processor=processor,
    )
    palette = palette_for(model.config)
    for (path, image), label in zip(readable, labels):
        write_prediction(image, label, palette, out, path.stem, args.raw)
    print(f"wrote {len(readable)} predictions to {out}")
    for message in failed:
        print(f"error: {message}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
