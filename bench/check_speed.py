"""The pre-flight check's cost (`data.check: quick`, the default): every image and mask header read, and a seeded
sample of the masks decoded and diagnosed (all of a split of up to 500, else 300).

    PYTHONPATH=. python bench/check_speed.py [--count 10000] [--rounds 3] [--full]
    PYTHONPATH=. python bench/check_speed.py --smoke        # tiny sizes: checks the script (tests/test_bench.py)

Writes a few distinct Cityscapes-size (1024x2048) PNG pairs (street scenes with label-id masks, as
bench/data_speed.py draws them) into a temporary `data.source: folder` tree, then hard-links them into
`--count` pairs (85% train, 15% val): every pair is a file of its own to open, and the disk holds only the
distinct ones. Files just written are in the page cache: this is the warm-disk cost (a cold disk adds one
random read per header and the read of each sampled mask). One process, one thread: the check is serial.

Prints the median round of the quick check on `--count` pairs, its parts (a header pair, a decoded and
tallied mask), the extrapolation from the parts, and the quick check on the demo's synthetic data
(512 + 64 samples, the data of a ~200 s run).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import PIL.Image
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from data_speed import street_scene  # noqa: E402

from segtune.data import load_source  # noqa: E402
from segtune.data.labels import label_spec  # noqa: E402
from segtune.data.mask_values import MaskValues, sampled  # noqa: E402
from segtune.data.preflight import check_sample, preflight, read_checked_mask  # noqa: E402
from segtune.data.sources.base import undecoded  # noqa: E402
from segtune.recipe import load_recipe  # noqa: E402

DISTINCT = 8
TRAIN_SHARE = 0.85


def write_tree(root: Path, count: int, step: int) -> None:
    """`count` image/mask pairs under root/{train,val}/{images,masks}/, hard links to DISTINCT written ones.

    `step` > 1 subsamples the 1024x2048 scenes (the smoke run's small files)."""
    distinct = []
    for i in range(DISTINCT):
        image, labels = street_scene(np.random.default_rng(i))
        pair = root / "distinct" / f"image_{i}.png", root / "distinct" / f"mask_{i}.png"
        pair[0].parent.mkdir(parents=True, exist_ok=True)
        PIL.Image.fromarray(image[::step, ::step]).save(pair[0])
        PIL.Image.fromarray(labels[::step, ::step]).save(pair[1])
        distinct.append(pair)
    train = int(count * TRAIN_SHARE)
    for index in range(count):
        split, number = ("train", index) if index < train else ("val", index - train)
        image, mask = distinct[index % DISTINCT]
        for kind, target in (("images", image), ("masks", mask)):
            folder = root / split / kind
            folder.mkdir(parents=True, exist_ok=True)
            os.link(target, folder / f"{number:06d}.png")


def median_time(work: Callable[[], object], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def check_args(recipe, level: str) -> tuple:
    """`preflight`'s arguments for the recipe's train and eval splits at `level` (the source listed here, once)."""
    source = load_source(recipe)
    labels = label_spec(recipe.data, source)
    splits = {s: source.splits[s] for s in (recipe.data.train_split, recipe.data.eval_split)}
    return splits, labels, level, False, source.name, recipe.train.seed


def quick_check(recipe) -> Callable[[], list[str]]:
    """A function running the quick check on the recipe's train and eval splits (the source listed once)."""
    args = check_args(recipe, "quick")
    return lambda: preflight(*args)


def part_costs(recipe, rounds: int) -> tuple[float, float]:
    """(seconds per header pair, seconds per decoded and tallied mask), medians over the distinct pairs."""
    source = load_source(recipe)
    labels = label_spec(recipe.data, source)
    rows = list(undecoded(source.splits[recipe.data.train_split]).select(range(DISTINCT)))
    tally = MaskValues("train", len(rows), labels)

    def decode_all() -> None:
        for row in rows:
            tally.add(*read_checked_mask(row, labels), "bench")

    header = median_time(lambda: [check_sample(row, labels, "quick") for row in rows], rounds) / len(rows)
    return header, median_time(decode_all, rounds) / len(rows)


def main() -> None:
    args = parse_args()
    torch.set_num_threads(1)
    count, step = (40, 16) if args.smoke else (args.count, 1)
    rounds = 1 if args.smoke else args.rounds
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_tree(root, count, step)
        recipe = load_recipe(None, ["data.source=folder", f"data.path={root}", "data.num_labels=34"])
        check = quick_check(recipe)
        measured = median_time(check, rounds)
        header, mask = part_costs(recipe, rounds)
        full = median_time(lambda: preflight(*check_args(recipe, "full")), 1) if args.full else None
    train = int(count * TRAIN_SHARE)
    decoded = len(sampled(train, "quick", 0)) + len(sampled(count - train, "quick", 0))
    size = f"{1024 // step}x{2048 // step}"
    print(f"quick check, {count} {size} pairs ({train} train + {count - train} val), {decoded} masks decoded, 1 thread")
    print(f"measured: {measured:.2f} s (median of {rounds} rounds)")
    print(f"parts: {header * 1e3:.2f} ms per header pair, {mask * 1e3:.1f} ms per decoded and tallied mask")
    print(f"extrapolated from the parts: {count * header + decoded * mask:.2f} s")
    if full is not None:
        print(f"full check (every mask decoded): {full:.2f} s")
    demo = load_recipe("demo.yaml", ["data.synthetic.num_train=16"] if args.smoke else [])
    synthetic = demo.data.synthetic
    demo_time = median_time(quick_check(demo), rounds)
    print(f"demo data ({synthetic.num_train} + {synthetic.num_eval} synthetic samples): quick {demo_time:.2f} s")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=10_000, help="image/mask pairs in the tree (default 10000)")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds; the median is printed (default 3)")
    parser.add_argument("--full", action="store_true", help="also time data.check=full once (every mask decoded)")
    parser.add_argument("--smoke", action="store_true", help="40 pairs of 64x128: checks the script")
    return parser.parse_args()


if __name__ == "__main__":
    main()
