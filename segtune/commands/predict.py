"""Predict segmentation maps for image files: colour masks, overlays with a legend, raw class indices.

    segtune predict --model outputs/demo images/*.jpg --out predictions/
    segtune predict --model user/segformer-b0-city city.png --out out/ --mode slide --raw
    segtune predict --onnx outputs/demo/onnx images/*.jpg --out predictions/     # ONNX Runtime
    segtune predict --model outputs/city big.tif --out out/ --tile --crop_size 1024 1024 --stride 768 768

Per image NAME: NAME_mask.png (class colours; its pixels are only the colours), NAME_overlay.png (the mask
over the image, with a legend band below), NAME_legend.png (the classes in the image, with their colours)
and, with --raw, NAME_labels.png (class indices). --tile writes NAME_labels.tif and NAME_mask.tif instead
(tiled TIFFs, streamed band by band) and NAME_legend.png, and no overlay.

The library function is `segtune.segment(model, images)` (segtune/inference.py).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ..recipe import EVAL_MODES, EvalConfig
from . import cli

if TYPE_CHECKING:
    from collections.abc import Mapping

    import numpy as np
    import torch
    from PIL import Image

_DEFAULTS = EvalConfig()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    model = parser.add_mutually_exclusive_group(required=True)
    model.add_argument("--model", help="checkpoint directory or Hub repo id; this or --onnx (default: none)")
    model.add_argument(
        "--onnx",
        help="an exported model.onnx, or the folder `segtune export` wrote, run by ONNX Runtime with the image "
        "processor saved beside it; this or --model (default: none)",
    )
    parser.add_argument("images", nargs="+", help="image files")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--raw", action="store_true", help="also write the class-index PNG (default: off)")
    parser.add_argument(
        "--mode",
        choices=EVAL_MODES,
        default=_DEFAULTS.mode,
        help="whole: each image in one pass; slide: windows of --crop_size every --stride (default: %(default)s)",
    )
    for option, default, what in (("--crop_size", _DEFAULTS.crop_size, "size"), ("--stride", _DEFAULTS.stride, "step")):
        parser.add_argument(
            option,
            type=int,
            nargs=2,
            default=default,
            metavar=("H", "W"),
            help=f"sliding-window {what}, with --mode slide (default: {' '.join(map(str, default))})",
        )
    parser.add_argument(
        "--tile",
        action="store_true",
        help="images of any size in bounded memory: the sliding window (--crop_size, --stride) in bands of rows, "
        "TIFF input read band by band, the labels and colour mask streamed to tiled TIFFs; the same labels as "
        "--mode slide (default: off)",
    )
    parser.add_argument("--tta", action="store_true", help="average over eval.tta_scales and flips (default: off)")
    parser.add_argument("--batch_size", type=int, default=4, help="images per forward pass (default: %(default)s)")
    parser.add_argument(
        "--device", default="auto", help="auto (CUDA, MPS, CPU), cpu, cuda, cuda:1 ... (default: %(default)s)"
    )


def run(args: argparse.Namespace) -> int:
    """Write predictions for every readable image; report unreadable ones by name; exit 1 if any failed."""
    cli.quiet_transformers()
    from ..errors import is_user_error
    from ..inference import open_image, segment
    from ..models.loading import load_for_inference
    from ..visualize import palette_for

    if args.onnx:
        from ..export.runtime import load_onnx

        model, processor = load_onnx(args.onnx)
    else:
        model, processor = load_for_inference(args.model)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.tile:
        return _run_tiled(args, model, processor, out)
    failed, readable = [], []
    for path in args.images:
        try:
            readable.append((Path(path), open_image(path)))
        except Exception as error:
            if not is_user_error(error):
                raise
            failed.append(str(error))
    labels = segment(
        model,
        [image for _, image in readable],
        processor=processor,
        batch_size=args.batch_size,
        device=args.device,
        mode=args.mode,
        crop_size=tuple(args.crop_size),
        stride=tuple(args.stride),
        tta=args.tta,
    )
    palette = palette_for(model.config)
    for (path, image), label in zip(readable, labels):
        write_prediction(image, label, palette, out, path.stem, args.raw, id2label=model.config.id2label)
    return _report(len(readable), out, failed)


def _report(written: int, out: Path, failed: list[str]) -> int:
    print(f"wrote {written} predictions to {out}")
    for message in failed:
        print(f"error: {message}", file=sys.stderr)
    return 1 if failed else 0


def _run_tiled(args: argparse.Namespace, model, processor, out: Path) -> int:
    """--tile: one image at a time, each streamed to its TIFFs; an unreadable image is named, the rest written."""
    from ..errors import is_user_error
    from ..inference import check_tiling, pick_device
    from ..visualize import palette_for

    config = EvalConfig(mode="slide", crop_size=tuple(args.crop_size), stride=tuple(args.stride), tta=args.tta)
    check_tiling(config, processor)
    model = model.to(pick_device(args.device)).eval()
    palette, failed, written = palette_for(model.config), [], 0
    for path in map(Path, args.images):
        try:
            write_tiled_prediction(model, processor, path, config, palette, out, id2label=model.config.id2label)
            written += 1
        except Exception as error:
            if not is_user_error(error):
                raise
            failed.append(str(error))
    return _report(written, out, failed)


def write_prediction(
    image: Image.Image,
    label: np.ndarray,
    palette: list,
    out: Path,
    stem: str,
    raw: bool,
    id2label: Mapping[int, str] | None = None,
) -> list[Path]:
    """Colour mask, overlay with a legend, legend and (optionally) raw class-index PNG for one image; return the
    paths. The legend lists the classes in `label`, named by `id2label`."""
    import numpy as np
    from PIL import Image

    from ..legend import classes_present, legend_entries, legend_image, with_legend
    from ..visualize import colorize, overlay, to_pil

    written = [out / f"{stem}_mask.png", out / f"{stem}_overlay.png", out / f"{stem}_legend.png"]
    entries = legend_entries(classes_present(label, num_classes=len(palette), ignore_index=-1), id2label, palette)
    to_pil(colorize(label, palette)).save(written[0])
    with_legend(to_pil(overlay(image, label, palette)), entries).save(written[1])
    legend_image(entries).save(written[2])  # the key to the mask, whose pixels stay class colours only
    if raw:
        written.append(out / f"{stem}_labels.png")
        dtype = np.uint8 if label.max(initial=0) < 256 else np.uint16
        Image.fromarray(label.astype(dtype)).save(written[-1])
    return written


def write_tiled_prediction(
    model: torch.nn.Module,
    processor,
    path: Path,
    config: EvalConfig,
    palette: list,
    out: Path,
    id2label: Mapping[int, str] | None = None,
) -> list[Path]:
    """One image predicted in bands (`inference.predict_bands`): the class indices streamed to a tiled TIFF
    as the rows become final, then the colour mask from it band by band, then the legend; return the paths.
    Memory stays bounded whatever the image's height (TIFF input is read band by band).

    Raises:
        DatasetError: the image cannot be read (named).
        RecipeError: settings tiling cannot honour.
    """
    import numpy as np

    from ..inference import open_raster, predict_bands
    from ..legend import legend_entries, legend_image
    from ..raster import TILE, TiffRaster, write_tiff
    from ..visualize import colorize

    written = [out / f"{path.stem}_labels.tif", out / f"{path.stem}_mask.tif", out / f"{path.stem}_legend.png"]
    dtype = np.uint8 if len(palette) <= 256 else np.uint16
    counts = np.zeros(len(palette), np.int64)
    with open_raster(path) as raster:
        height, width = raster.height, raster.width

        def counted():
            for band in predict_bands(model, raster, processor, config):
                counts[:] += np.bincount(band.ravel(), minlength=len(palette))
                yield band.astype(dtype)

        write_tiff(written[0], counted(), height, width, dtype)
    with TiffRaster(written[0], rgb=False) as labels:
        colours = (
            colorize(labels.read_samples(y, min(y + TILE, height))[..., 0], palette).permute(1, 2, 0).numpy()
            for y in range(0, height, TILE)
        )
        write_tiff(written[1], colours, height, width, np.uint8, rgb=True)
    legend_image(legend_entries(np.flatnonzero(counts).tolist(), id2label, palette)).save(written[2])
    return written
