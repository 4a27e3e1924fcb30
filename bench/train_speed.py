"""Training throughput and peak memory: segtune's loop against transformers' semantic-segmentation example.

    PYTHONPATH=. python bench/train_speed.py [--size 512] [--batch 2] [--steps 6] [--rounds 3]

Both read the same synthetic `datasets` split (PNG-encoded scenes of `--size` pixels) and train B0
at `--size` crops, batch `--batch`, on one process:

- segtune: `segtune.train.loop` itself (`prepare_run`, `train_step`): recipe augmentations (random
  resize 0.5-2.0, cat_max_ratio crop, flip, photometric distortion), the MixTransformer model, AdamW
  parameter groups, Accelerate.
- transformers' example (`run_semantic_segmentation_no_trainer.py`), re-created from its documented
  behaviour: `SegformerForSemanticSegmentation`, the example's transforms (pad, random crop, flip,
  normalise; see bench/data_speed.py), `DataLoader(shuffle=True)`, AdamW, `get_scheduler`, and its
  loop: `model(**batch)`, `accelerator.backward`, `optimizer.step`, `lr_scheduler.step`, `zero_grad`.

Rounds alternate between the two; the median step time gives images/s. Peak memory is the rise of
the process's peak RSS over the steps, measured in a fresh process per pipeline.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader
from transformers import SegformerForSemanticSegmentation, get_scheduler

sys.path.insert(0, str(Path(__file__).resolve().parent))
from data_speed import example_train_transform  # noqa: E402

from segtune.data import build_datasets, load_source  # noqa: E402
from segtune.recipe import load_recipe  # noqa: E402
from segtune.train import loop  # noqa: E402

PIPELINES = ("segtune", "transformers example")


def recipe(args: argparse.Namespace):
    return load_recipe(
        "demo.yaml",
        [
            f"data.synthetic.image_size={args.size}",
            "data.synthetic.num_train=32",
            "data.synthetic.num_eval=2",
            f"augment.scale=[{args.size},{args.size}]",
            f"augment.crop_size={args.size}",
            "augment.ratio_range=[0.5,2.0]",
            "augment.photometric=true",
            f"train.per_device_batch_size={args.batch}",
            "data.num_workers=0",
            "model.drop_path_rate=0.1",
            "optim.lr=6e-5",
            "optim.head_lr_mult=10",
            "logging.report_to=[none]",
            f"train.max_steps={10_000}",
            "optim.warmup_steps=10",
        ],
    )


def segtune_step(args: argparse.Namespace) -> Callable[[], None]:
    run = loop.prepare_run(recipe(args), loop.make_accelerator(recipe(args)))
    batches = loop.micro_batches(run)
    return lambda: loop.train_step(run, batches)


def example_step(args: argparse.Namespace) -> Callable[[], None]:
    r = recipe(args)
    data = build_datasets(r)  # the same synthetic files, read through the example's own transforms
    split = load_source(r).splits[r.data.train_split]
    transform = example_train_transform(data.processor.image_mean, data.processor.image_std, args.size)
    loader = DataLoader(split.with_transform(transform), batch_size=args.batch, shuffle=True, drop_last=True)
    torch.manual_seed(0)
    from segtune.models.mix_transformer import MixTransformerConfig

    config = MixTransformerConfig.from_variant("mit-b0", id2label=data.labels.id2label).to_segformer_config()
    model = SegformerForSemanticSegmentation(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=6e-5)
    scheduler = get_scheduler("polynomial", optimizer, num_warmup_steps=10, num_training_steps=10_000)
    accelerator = Accelerator()
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    model.train()

    def batches():
        while True:
            yield from loader

    stream = batches()

    def step() -> None:
        batch = next(stream)
        loss = model(**batch).loss
        accelerator.backward(loss)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()

    return step


BUILDERS = {"segtune": segtune_step, "transformers example": example_step}


def median_step_seconds(step: Callable[[], None], count: int) -> list[float]:
    times = []
    for _ in range(count):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return times


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field))


def memory_child(name: str, args: argparse.Namespace) -> float:
    """MiB the peak RSS rises above the resting footprint over `args.steps` steps (after one warm-up)."""
    step = BUILDERS[name](args)
    step()
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")  # reset VmHWM to the current RSS
    base = _status_kib("VmRSS")
    for _ in range(args.steps):
        step()
    return (_status_kib("VmHWM") - base) / 1024


def peak_memory(name: str, args: argparse.Namespace) -> float:
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}  # freed tensors go back to the OS: RSS tracks live ones
    command = [
        sys.executable,
        __file__,
        "--memory-child",
        name,
        "--size",
        str(args.size),
        "--batch",
        str(args.batch),
        "--steps",
        str(args.steps),
    ]
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    return float(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=6, help="steps per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--memory-child", choices=PIPELINES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        print(memory_child(args.memory_child, args))
        return
    steps = {name: build(args) for name, build in BUILDERS.items()}
    for step in steps.values():
        step()  # warm-up: first-call allocations, oneDNN primitives
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(args.rounds):
        for name, step in steps.items():
            times[name] += median_step_seconds(step, args.steps)
    memory = {name: peak_memory(name, args) for name in steps}
    rates = {name: args.batch / statistics.median(t) for name, t in times.items()}
    print(
        f"B0, {args.size}x{args.size} crops, batch {args.batch}, 1 process, {torch.get_num_threads()} threads, "
        f"median of {args.rounds * args.steps} steps"
    )
    print("| pipeline | images/s | ms/step | peak MiB |")
    print("|---|---|---|---|")
    for name in steps:
        print(f"| {name} | {rates[name]:.2f} | {1000 * args.batch / rates[name]:.0f} | {memory[name]:.0f} |")
    print(
        f"segtune / transformers example: {rates['segtune'] / rates['transformers example']:.2f}x throughput, "
        f"{memory['transformers example'] / memory['segtune']:.2f}x less peak memory"
    )
    print(json.dumps({"rates": rates, "memory_mib": memory}))


if __name__ == "__main__":
    main()
