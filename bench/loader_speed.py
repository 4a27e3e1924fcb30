"""The training data path alone, on Cityscapes-size images: what the DataLoader can feed a GPU.

    python bench/loader_speed.py                 # generates 24 PNG pairs of 1024x2048, ~1 min on 2 cores
    python bench/loader_speed.py --workers 0 1 2 4 --data /tmp/city   # reuse a generated folder

Prints, from one run:
- the per-sample time of `TrainDataset.__getitem__` in this process (decode, resized crop, flip, labels);
- images/s of the training DataLoader with 0 workers (this process does the work) and with each worker
  count, and the ratio of each to the 0-worker rate;
- the bytes one sample takes across the worker boundary;
- the same for evaluation samples (full 1024x2048 images, normalised on the CPU by the image processor,
  labels at native resolution), with 0 workers and the largest worker count;
- the transport alone: a dataset that only fills a ready-made 1024x1024 sample, handed over by the
  workers in segtune's compact format (uint8 image and labels) and in the float32 + int64 format the
  loop used before, as the ratio of the two.

Synthetic data (as ../shared/GPU.md): class blocks coloured by class with Gaussian noise (sigma 25),
PNG compression level 1, 19 classes. On a machine without a GPU this is the data half of
bench/gpu_train.py.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from segtune.data import build_datasets, make_loader  # noqa: E402
from segtune.data.loaders import eval_collate  # noqa: E402
from segtune.recipe import load_recipe  # noqa: E402
from segtune.train.sampler import EpochSampler  # noqa: E402

NUM_CLASSES = 19
HEIGHT, WIDTH = 1024, 2048


def make_scene(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(RGB uint8 (H, W, 3), mask uint8 (H, W)): blocks of 19 classes, coloured by class, with noise."""
    blocks = rng.integers(0, NUM_CLASSES, (8, 16), dtype=np.uint8)
    mask = blocks.repeat(HEIGHT // 8, 0).repeat(WIDTH // 16, 1)
    colours = rng.integers(0, 256, (NUM_CLASSES, 3)).astype(np.float32)
    image = colours[mask] + rng.normal(0, 25, (HEIGHT, WIDTH, 3)).astype(np.float32)
    return image.clip(0, 255).astype(np.uint8), mask


def make_dataset(root: Path, num_train: int, num_val: int) -> Path:
    """A folder dataset (train/ and val/, images/ and masks/) of Cityscapes-size PNG pairs; kept if present."""
    rng = np.random.default_rng(0)
    for split, count in (("train", num_train), ("val", num_val)):
        for folder in ("images", "masks"):
            (root / split / folder).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            if (root / split / "masks" / f"{i:04d}.png").is_file():
                continue
            image, mask = make_scene(rng)
            Image.fromarray(image).save(root / split / "images" / f"{i:04d}.png", compress_level=1)
            Image.fromarray(mask).save(root / split / "masks" / f"{i:04d}.png", compress_level=1)
    return root


def cityscapes_recipe(root: Path, *overrides: str):
    """cityscapes.yaml's augmentation (1024 crops of (2048, 1024) x 0.5-2.0, photometric) on the folder."""
    return load_recipe(
        "cityscapes.yaml",
        ["data.source=folder", f"data.path={root}", f"data.num_labels={NUM_CLASSES}", "data.check=off", *overrides],
    )


def sample_ms(data, count: int) -> float:
    """Median milliseconds of one `TrainDataset.__getitem__` in this process."""
    times = []
    for key in range(count):
        start = time.perf_counter()
        data.train[key]
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def loader_rate(loader: DataLoader, batches: int) -> float:
    """Images per second over `batches` batches, after the first (workers starting) is discarded."""
    iterator = iter(loader)
    next(iterator)
    start, images = time.perf_counter(), 0
    for _ in range(batches):
        batch = next(iterator)
        images += len(next(iter(batch.values())))
    return images / (time.perf_counter() - start)


def train_loader(data, batch_size: int, workers: int, seed: int = 0) -> DataLoader:
    return make_loader(data.train, batch_size, workers, sampler=EpochSampler(len(data.train) * 1000, seed))


def batch_bytes(batch: dict) -> int:
    return sum(t.numel() * t.element_size() for t in batch.values() if isinstance(t, torch.Tensor))


class ReadySamples(Dataset):
    """Only fills one 1024x1024 sample per item: what crossing the worker boundary costs, and nothing else."""

    def __init__(self, compact: bool) -> None:
        self.compact = compact

    def __len__(self) -> int:
        return 1 << 20

    def __getitem__(self, key: int) -> dict[str, torch.Tensor]:
        if self.compact:
            return {
                "image": torch.full((3, 1024, 1024), key % 256, dtype=torch.uint8),
                "labels": torch.full((1024, 1024), key % 19, dtype=torch.uint8),
                "photometric": torch.zeros(5),
                "valid_size": torch.tensor([1024, 1024], dtype=torch.int32),
            }
        return {
            "pixel_values": torch.full((3, 1024, 1024), float(key)),
            "labels": torch.full((1024, 1024), key % 19, dtype=torch.int64),
        }


def transport_rates(workers: list[int], batch_size: int, batches: int) -> dict[tuple[str, int], float]:
    """Images/s of `ReadySamples` in both formats for each worker count (>= 1)."""
    rates = {}
    for count in [w for w in workers if w > 0]:
        for name, compact in (("compact uint8", True), ("float32 + int64", False)):
            loader = DataLoader(ReadySamples(compact), batch_size=batch_size, num_workers=count)
            rates[(name, count)] = loader_rate(loader, batches)
    return rates


def eval_part(data, args: argparse.Namespace) -> None:
    """Evaluation items: per-sample ms, bytes across the worker boundary, loader images/s."""
    times = []
    for index in range(len(data.eval)):
        start = time.perf_counter()
        item = data.eval[index]
        times.append(time.perf_counter() - start)
    batch = eval_collate([item])
    sizes = ", ".join(f"{k} {tuple(v.shape[1:])} {str(v.dtype).replace('torch.', '')}" for k, v in batch.items())
    print(
        f"\nEvalDataset.__getitem__, this process: {1000 * statistics.median(times):.1f} ms per sample; "
        f"{batch_bytes(batch) / 1e6:.1f} MB per sample across the worker boundary ({sizes})"
    )
    for workers in (0, max(args.workers)):
        loader = make_loader(data.eval, 1, workers, sampler=list(range(len(data.eval))) * 50)
        print(f"evaluation DataLoader, {workers} workers: {loader_rate(loader, args.batches * 2):.1f} images/s")


def run(args: argparse.Namespace) -> None:
    root = Path(args.data) if args.data else Path(tempfile.mkdtemp(prefix="segtune-city-"))
    started = time.perf_counter()
    make_dataset(root, args.samples, 2)
    print(f"data: {args.samples} train PNG pairs of {HEIGHT}x{WIDTH} in {root} ({time.perf_counter() - started:.0f} s)")
    data = build_datasets(cityscapes_recipe(root))
    print(f"TrainDataset.__getitem__, this process: {sample_ms(data, args.batches):.1f} ms per sample (median)")
    batch = next(iter(train_loader(data, args.batch_size, 0)))
    per_sample = batch_bytes(batch) / args.batch_size
    dtypes = ", ".join(f"{k} {tuple(v.shape[1:])} {str(v.dtype).replace('torch.', '')}" for k, v in batch.items())
    print(f"bytes per sample across the worker boundary: {per_sample / 1e6:.3f} MB ({dtypes})")
    rates = {w: loader_rate(train_loader(data, args.batch_size, w), args.batches) for w in args.workers}
    print("\n| DataLoader workers | images/s | vs 0 workers (this process) |\n|---|---|---|")
    for workers, rate in rates.items():
        print(f"| {workers} | {rate:.1f} | {rate / rates[args.workers[0]]:.2f}x |")
    eval_part(data, args)
    transport = transport_rates(args.workers, args.batch_size, args.batches * 2)
    print(
        "\ntransport only (ready-made 1024x1024 samples):\n| workers | compact uint8 img/s | float32 + int64 img/s | ratio |"
    )
    print("|---|---|---|---|")
    for workers in sorted({w for _, w in transport}):
        compact, wide = transport[("compact uint8", workers)], transport[("float32 + int64", workers)]
        print(f"| {workers} | {compact:.0f} | {wide:.0f} | {compact / wide:.1f}x |")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", help="folder for the generated dataset (reused if present); default: a temp dir")
    parser.add_argument("--samples", type=int, default=24, help="training PNG pairs to generate")
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--batches", type=int, default=6, help="timed batches per setting")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2], help="first one is the reference")
    return parser.parse_args(argv)


if __name__ == "__main__":
    run(parse_args())
