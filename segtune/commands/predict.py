"""Predict segmentation maps for image files: colour masks, overlays, raw class indices.

    segtune predict --model outputs/demo images/*.jpg --out predictions/
    segtune predict --model user/segformer-b0-city city.png --out out/ --mode slide --raw
    segtune predict --onnx outputs/demo/onnx images/*.jpg --out predictions/     # ONNX Runtime

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
    import numpy as np
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
        write_prediction(image, label, palette, out, path.stem, args.raw)
    print(f"wrote {len(readable)} predictions to {out}")
    for message in failed:
        print(f"error: {message}", file=sys.stderr)
    return 1 if failed else 0


def write_prediction(
    image: Image.Image, label: np.ndarray, palette: list, out: Path, stem: str, raw: bool
) -> list[Path]:
    """Colour mask, overlay and (optionally) raw class-index PNG for one image; return the paths."""
    import numpy as np
    from PIL import Image

    from ..visualize import colorize, overlay, to_pil

    written = [out / f"{stem}_mask.png", out / f"{stem}_overlay.png"]
    to_pil(colorize(label, palette)).save(written[0])
    to_pil(overlay(image, label, palette)).save(written[1])
    if raw:
        written.append(out / f"{stem}_labels.png")
        dtype = np.uint8 if label.max(initial=0) < 256 else np.uint16
        Image.fromarray(label.astype(dtype)).save(written[-1])
    return written
