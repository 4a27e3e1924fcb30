"""Tiled prediction's time and peak memory: `segtune predict --tile` on a 16,384 x 16,384 TIFF, B0, 19 classes, CPU.

The bench writes a tiled, deflate-compressed RGB TIFF (a smooth synthetic scene, generated tile by tile: the
bench itself never holds the image) and a randomly initialised MiT-B0 checkpoint with 19 classes and an image
processor that does not resize, then runs `segtune predict --tile` on it in a child process, the way a user
would, and reads the child's peak resident memory with `resource.getrusage(RUSAGE_CHILDREN)`. A first child
predicts a TIFF of one window (1,024 x 1,024) with the same settings, so the table also shows what the interpreter, torch,
transformers and the model weigh before the image's size matters. The sliding window without tiles would
hold at least the (19, H, W) float32 logits of the whole image: that size is printed for comparison
(computed, not run).

    PYTHONPATH=. python bench/tile_memory.py                      # 16,384 x 16,384: about 30 min on 2 cores
    PYTHONPATH=. python bench/tile_memory.py --size 2048          # a quick check: well under a minute
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=16384, help="image height and width (default: %(default)s)")
    parser.add_argument("--num-labels", type=int, default=19)
    parser.add_argument("--variant", default="mit-b0")
    parser.add_argument("--crop", type=int, default=1024, help="sliding window side (default: %(default)s)")
    parser.add_argument("--stride", type=int, default=768, help="sliding window step (default: %(default)s)")
    parser.add_argument(
        "--work", type=Path, default=None, help="folder for the TIFF, model and outputs (default: temp)"
    )
    return parser.parse_args()


def scene_tiles(size: int, tile: int, seed: int = 0) -> Iterator[np.ndarray]:
    """(tile, tile, 3) uint8 tiles, row by row, of a smooth colour field with noise and a few blocks."""
    rng = np.random.default_rng(seed)
    phases = rng.uniform(0, 2 * np.pi, 3)
    for y in range(0, size, tile):
        for x in range(0, size, tile):
            yy, xx = np.mgrid[y : y + tile, x : x + tile].astype(np.float32) / 2048
            channels = [np.sin(yy * (c + 1) + xx * (3 - c) + phases[c]) for c in range(3)]
            pixels = (np.stack(channels, -1) * 90 + 128 + rng.normal(0, 12, (tile, tile, 3))).clip(0, 255)
            if (y // tile + x // tile) % 5 == 0:
                pixels[tile // 4 : tile // 2, tile // 4 : 3 * tile // 4] = rng.integers(0, 256, 3)
            yield pixels.astype(np.uint8)


def write_scene(path: Path, size: int, tile: int = 512) -> None:
    import tifffile

    tifffile.imwrite(
        path,
        scene_tiles(size, tile),
        shape=(size, size, 3),
        dtype=np.uint8,
        tile=(tile, tile),
        compression="zlib",
        photometric="rgb",
        bigtiff=True,
    )


def write_model(path: Path, variant: str, num_labels: int) -> None:
    import torch
    from transformers import SegformerImageProcessor
    from transformers.utils import logging

    logging.disable_progress_bar()

    from segtune.models.mix_transformer import MixTransformerConfig, MixTransformerForSemanticSegmentation

    torch.manual_seed(0)
    model = MixTransformerForSemanticSegmentation(MixTransformerConfig.from_variant(variant, num_labels=num_labels))
    model.save_pretrained(path)
    SegformerImageProcessor(do_resize=False, do_reduce_labels=False).save_pretrained(path)


def predict(model: Path, image: Path, out: Path, crop: int, stride: int) -> tuple[float, float, float]:
    """Run `segtune predict --tile` in a child; return (wall seconds, CPU seconds (user + system), peak RSS of
    any child so far in GiB). The CPU time says what the work costs on a machine shared with other jobs."""
    command = [sys.executable, "-m", "segtune", "predict", "--model", str(model), str(image), "--out", str(out)]
    command += ["--tile", "--crop_size", str(crop), str(crop), "--stride", str(stride), str(stride), "--device", "cpu"]
    before, start = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    subprocess.run(command, check=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    seconds, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return seconds, cpu, after.ru_maxrss / 2**20  # KiB on Linux


def main() -> None:
    args = parse_args()
    import tifffile

    from segtune.inference import window_grid

    with tempfile.TemporaryDirectory() as temporary:
        work = args.work or Path(temporary)
        work.mkdir(parents=True, exist_ok=True)
        write_model(work / "model", args.variant, args.num_labels)
        small, big = work / "small.tif", work / f"scene_{args.size}.tif"
        write_scene(small, args.crop)
        start = time.perf_counter()
        write_scene(big, args.size)
        print(f"wrote {big.name} ({big.stat().st_size / 2**20:.0f} MiB) in {time.perf_counter() - start:.0f} s")
        *_, baseline = predict(work / "model", small, work / "out", args.crop, args.stride)
        seconds, cpu, peak = predict(work / "model", big, work / "out", args.crop, args.stride)
        labels = tifffile.TiffFile(work / "out" / f"{big.stem}_labels.tif").pages.first
        assert labels.shape == (args.size, args.size), labels.shape
        windows = len(window_grid(args.size, args.size, (args.crop, args.crop), (args.stride, args.stride)))
        untiled = args.num_labels * args.size**2 * 4 / 2**30

    print(f"\n{args.variant}, {args.num_labels} classes, window {args.crop} stride {args.stride}, CPU\n")
    print(
        f"| image | windows | time | CPU time | peak RSS | RSS for one {args.crop} px window | untiled logits (computed) |"
    )
    print("|---|---|---|---|---|---|---|")
    print(
        f"| {args.size} x {args.size} | {windows} | {_minutes(seconds)} | {_minutes(cpu)} | {peak:.2f} GiB "
        f"| {baseline:.2f} GiB | {untiled:.1f} GiB |"
    )


def _minutes(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s"


if __name__ == "__main__":
    main()
