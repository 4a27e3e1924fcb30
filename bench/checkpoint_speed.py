"""What checkpoint integrity costs: the manifest (SHA-256 of every file, fsync) against Accelerate's save_state.

A MiT model with AdamW state after one step (so the optimizer state has its full size), saved as a run saves
it. Per variant, the median of `--repeats` rounds of: save_state into a fresh folder; write_manifest on it
(one read of every file just written, from the page cache, plus fsync); the resume check (sizes and
checksums, a read of every file) and the rotation check (sizes only, a stat per file).

    python bench/checkpoint_speed.py                     # B0 and B2, 19 classes, in a temporary folder
    python bench/checkpoint_speed.py --variants mit-b0 --dir /scratch
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from accelerate import Accelerator

from segtune.models.mix_transformer import MixTransformerConfig, MixTransformerForSemanticSegmentation
from segtune.train.disk_space import MB, folder_bytes
from segtune.train.integrity import damage, write_manifest


def prepared(variant: str) -> Accelerator:
    """An Accelerator holding a `variant` model and its AdamW optimizer, one step in."""
    torch.manual_seed(0)
    model = MixTransformerForSemanticSegmentation(MixTransformerConfig.from_variant(variant, num_labels=19))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    accelerator = Accelerator(cpu=True)
    model, optimizer = accelerator.prepare(model, optimizer)
    pixels, labels = torch.randn(1, 3, 64, 64), torch.randint(0, 19, (1, 64, 64))
    model(pixel_values=pixels, labels=labels).loss.backward()
    optimizer.step()
    return accelerator


def timed(work: Callable[[], object]) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def measure(variant: str, repeats: int, root: Path) -> dict[str, float]:
    accelerator, rounds = prepared(variant), []
    for round_ in range(repeats):
        folder = root / f"{variant}-{round_}"
        save = timed(lambda folder=folder: accelerator.save_state(str(folder)))
        manifest = timed(lambda folder=folder: write_manifest(folder))
        resume = timed(lambda folder=folder: damage(folder))
        rotation = timed(lambda folder=folder: damage(folder, checksums=False))
        rounds.append((save, manifest, resume, rotation, folder_bytes(folder) / MB))
        shutil.rmtree(folder)
    return dict(zip(("save", "manifest", "resume", "rotation", "mb"), map(statistics.median, zip(*rounds))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", default=["mit-b0", "mit-b2"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dir", help="where to write (default: a temporary folder)")
    args = parser.parse_args()
    print("| variant | checkpoint | save_state | + manifest (hash, fsync) | resume check | rotation check |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(dir=args.dir) as root:
        for variant in args.variants:
            m = measure(variant, args.repeats, Path(root))
            print(
                f"| {variant} | {m['mb']:.1f} MB | {m['save']:.3f} s | {m['manifest']:.3f} s "
                f"({100 * m['manifest'] / m['save']:.0f}%) | {m['resume']:.3f} s | {m['rotation'] * 1000:.2f} ms |"
            )


if __name__ == "__main__":
    main()
