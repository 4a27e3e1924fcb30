"""Training throughput on a GPU: the model alone, the data path alone, and the whole loop, from one run.

    python bench/gpu_train.py                      # everything the README's GPU table shows (~12 min on an H200)
    python bench/gpu_train.py --quick              # the acceptance cells only (~6 min): 512 compiled, short loop
    python bench/gpu_train.py --profile            # also the top CUDA kernels of B0 1024x1024 bf16, both models
    python bench/gpu_train.py --smoke              # every part at toy sizes on the CPU: checks the script runs

Without CUDA it says so and measures the data path only (as bench/loader_speed.py).

1. Model only: one training step (forward, loss, backward, AdamW) of segtune's MixTransformer, eager and
   `torch.compile`d, and of transformers' SegformerForSemanticSegmentation (eager), with the same
   weights, bf16 autocast, batch 8, at 512x512 and 1024x1024, for B0 and B2. Steps are interleaved;
   medians of `--steps` timed steps; peak memory per model.
2. Data only: images/s of the training DataLoader (pinned, copied to the GPU) with 1, 4 and N workers on
   Cityscapes-size PNGs (1024x2048), and the bytes per sample.
3. The loop: `segtune.train.train` on a generated Cityscapes-size folder (64 train / 8 val pairs), B0 from
   random weights, bf16, batch 8 of 1024x1024 crops, N workers: images/s over the steady steps, the
   ratio to the model-only step, and the mean GPU utilisation (nvidia-smi every 0.5 s).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import loader_speed  # noqa: E402

import segtune.train.loop as loop_module  # noqa: E402
from segtune.models.mix_transformer import MixTransformerConfig, MixTransformerForSemanticSegmentation  # noqa: E402
from segtune.train import train  # noqa: E402


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_step(model: torch.nn.Module, device: torch.device, batch: int, size: int, dtype: torch.dtype):
    """A closure running one training step of `model` on fixed random inputs."""
    generator = torch.Generator(device="cpu").manual_seed(0)
    pixel_values = torch.randn(batch, 3, size, size, generator=generator).to(device)
    labels = torch.randint(0, 19, (batch, size, size), generator=generator).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=device.type == "cuda")

    def step() -> None:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            loss = model(pixel_values=pixel_values, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def time_steps(steps: dict, device: torch.device, count: int, warmup: int = 3) -> dict[str, float]:
    """Median ms per step of each closure, interleaved so drift hits every model alike."""
    for step in steps.values():
        for _ in range(warmup):
            step()
    sync(device)
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(count):
        for name, step in steps.items():
            sync(device)
            start = time.perf_counter()
            step()
            sync(device)
            times[name].append(1000 * (time.perf_counter() - start))
    return {name: statistics.median(values) for name, values in times.items()}


def peak_mib(step, device: torch.device) -> float:
    if device.type != "cuda":
        return float("nan")
    torch.cuda.reset_peak_memory_stats(device)
    step()
    sync(device)
    return torch.cuda.max_memory_allocated(device) / 2**20


def model_cell(variant: str, size: int, args: argparse.Namespace, device: torch.device, compiled: bool) -> dict:
    """ms per step (and peak MiB) of segtune eager, segtune compiled and transformers for one variant and size."""
    config = MixTransformerConfig.from_variant(variant, num_labels=19)
    ours = MixTransformerForSemanticSegmentation(config).to(device).train()
    reference = ours.to_segformer().to(device).train()
    steps = {
        "transformers": make_step(reference, device, args.batch_size, size, args.dtype),
        "segtune": make_step(ours, device, args.batch_size, size, args.dtype),
    }
    cell = {"compile_s": None}
    if compiled:
        twin = MixTransformerForSemanticSegmentation(config).to(device).train()
        twin.load_state_dict(ours.state_dict())
        steps["segtune compiled"] = make_step(
            torch.compile(twin, dynamic=False), device, args.batch_size, size, args.dtype
        )
        start = time.perf_counter()
        steps["segtune compiled"]()
        sync(device)
        cell["compile_s"] = time.perf_counter() - start
    cell["ms"] = time_steps(steps, device, args.steps)
    cell["peak"] = {name: peak_mib(step, device) for name, step in steps.items()}
    return cell


def print_model_table(cells: dict, batch_size: int) -> None:
    print(f"\n## Model only: train step (fwd + loss + bwd + AdamW), batch {batch_size}, median ms\n")
    print(
        "| variant | size | transformers | segtune eager | segtune compiled | eager x | compiled x | peak MiB tf / segtune | compile s |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for (variant, size), cell in cells.items():
        ms, peak = cell["ms"], cell["peak"]
        compiled = ms.get("segtune compiled")
        compiled_text = f"{compiled:.1f}" if compiled else "-"
        ratio = f"**{ms['transformers'] / compiled:.2f}x**" if compiled else "-"
        compile_s = f"{cell['compile_s']:.0f}" if cell["compile_s"] is not None else "-"
        print(
            f"| {variant} | {size} | {ms['transformers']:.1f} | {ms['segtune']:.1f} | {compiled_text} | "
            f"{ms['transformers'] / ms['segtune']:.2f}x | {ratio} | {peak['transformers']:.0f} / {peak['segtune']:.0f} | "
            f"{compile_s} |"
        )


def data_part(root: Path, args: argparse.Namespace, device: torch.device) -> None:
    """Loader images/s at 1, 4 and N workers (pinned and copied to the device) and bytes per sample."""
    data = loader_speed.build_datasets(loader_speed.cityscapes_recipe(root, *args.data_overrides))
    batch = next(iter(loader_speed.train_loader(data, args.batch_size, 0)))
    per_sample = loader_speed.batch_bytes(batch) / args.batch_size
    print(f"\n## Data only: training DataLoader, batch {args.batch_size}, {per_sample / 1e6:.2f} MB per sample\n")
    print("| workers | images/s |\n|---|---|")
    for workers in args.loader_workers:
        loader = loader_speed.train_loader(data, args.batch_size, workers)
        moving = ({k: v.to(device, non_blocking=True) for k, v in b.items()} for b in loader)
        print(f"| {workers} | {loader_speed.loader_rate(_sized(moving), args.loader_batches):.1f} |")


def _sized(batches):
    """Pass batches through, synchronising so a copy to the GPU counts when it completes."""
    for batch in batches:
        sync(next(iter(batch.values())).device)
        yield batch


class GpuUtilisation:
    """nvidia-smi's utilisation.gpu every 0.5 s, while running; `mean()` over the samples."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self.process = None

    def start(self) -> None:
        try:
            self.process = subprocess.Popen(
                ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "-lms", "500"],
                stdout=subprocess.PIPE,
                text=True,
            )
        except FileNotFoundError:
            return
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            if line.strip().split(",")[0].strip().isdigit():
                self.samples.append(float(line.split(",")[0]))

    def stop(self) -> float | None:
        if self.process is not None:
            self.process.terminate()
        return statistics.mean(self.samples) if self.samples else None


def loop_part(root: Path, args: argparse.Namespace, device: torch.device, compiled: bool) -> dict:
    """images/s of the full loop over its steady steps, and the mean GPU utilisation meanwhile."""
    marks: dict[int, float] = {}
    utilisation = GpuUtilisation()
    real_step = loop_module.train_step
    first, last = args.loop_warmup, args.loop_warmup + args.loop_steps

    def timed_step(run, batches):
        real_step(run, batches)
        if run.state.step in (first, last):
            sync(device)
            marks[run.state.step] = time.perf_counter()
            utilisation.start() if run.state.step == first else None

    overrides = [
        *args.data_overrides,
        "model.init=random",
        f"train.mixed_precision={'bf16' if device.type == 'cuda' else 'no'}",
        f"train.per_device_batch_size={args.batch_size}",
        f"train.reference_batch_size={args.batch_size}",
        f"train.max_steps={last}",
        f"train.eval_steps={last}",
        f"train.save_steps={last}",
        f"train.logging_steps={args.loop_steps}",
        f"train.compile={compiled}",
        f"data.num_workers={args.loop_workers}",
        f"train.output_dir={tempfile.mkdtemp(prefix='segtune-loop-')}",
        "logging.report_to=[none]",
        "eval.num_visualizations=1",
    ]
    loop_module.train_step = timed_step
    try:
        results = train(loader_speed.cityscapes_recipe(root, *overrides))
    finally:
        loop_module.train_step = real_step
    busy = utilisation.stop()
    rate = args.loop_steps * args.batch_size / (marks[last] - marks[first])
    return {"images_s": rate, "gpu_util": busy, "miou": float(results["mean_iou"])}


def print_loop(loops: dict, model_ms: dict, args: argparse.Namespace) -> None:
    print(
        f"\n## The loop: B0, batch {args.batch_size} of {args.loop_size}x{args.loop_size} crops, {args.loop_workers} workers, "
        f"steps {args.loop_warmup}..{args.loop_warmup + args.loop_steps}\n"
    )
    print("| model | loop images/s | model-only images/s | loop / model-only | mean GPU utilisation | final mIoU |")
    print("|---|---|---|---|---|---|")
    for name, cell in loops.items():
        alone = 1000 * args.batch_size / model_ms[name] if model_ms.get(name) else float("nan")
        busy = f"{cell['gpu_util']:.0f}%" if cell["gpu_util"] is not None else "n/a"
        print(
            f"| {name} | {cell['images_s']:.1f} | {alone:.1f} | **{cell['images_s'] / alone:.0%}** | {busy} | "
            f"{cell['miou']:.3f} |"
        )


def profile_b0(args: argparse.Namespace, device: torch.device) -> None:
    """The ten CUDA kernels taking most time in one B0 1024x1024 bf16 step, for each model."""
    from torch.profiler import ProfilerActivity, profile

    config = MixTransformerConfig.from_variant("mit-b0", num_labels=19)
    ours = MixTransformerForSemanticSegmentation(config).to(device).train()
    for name, model in (("segtune", ours), ("transformers", ours.to_segformer().to(device).train())):
        step = make_step(model, device, args.batch_size, 1024, args.dtype)
        for _ in range(3):
            step()
        sync(device)
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            step()
            sync(device)
        print(f"\n## {name}: B0 1024x1024 bf16, top kernels\n")
        print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=10))


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    root = Path(args.data or tempfile.mkdtemp(prefix="segtune-city-"))
    if device.type != "cuda" and not args.smoke:
        print("no CUDA device: measuring the data path only (bench/loader_speed.py); run on a GPU for the rest")
        loader_speed.run(loader_speed.parse_args(["--data", str(root), "--workers", "0", "1", "2"]))
        return
    print(
        f"device: {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu (smoke)'}, "
        f"torch {torch.__version__}, {os.cpu_count()} CPU cores"
    )
    started = time.perf_counter()
    loader_speed.make_dataset(root, args.num_train, args.num_val)
    print(f"data: {args.num_train}+{args.num_val} PNG pairs in {root} ({time.perf_counter() - started:.0f} s)")
    cells = {
        (variant, size): model_cell(variant, size, args, device, size in args.compile_sizes)
        for variant in args.variants
        for size in args.sizes
    }
    print_model_table(cells, args.batch_size)
    data_part(root, args, device)
    b0 = cells.get(("mit-b0", args.loop_size), {}).get("ms", {})
    loops = {"segtune eager": loop_part(root, args, device, compiled=False)}
    if args.loop_compiled:
        loops["segtune compiled"] = loop_part(root, args, device, compiled=True)
    print_loop(loops, {"segtune eager": b0.get("segtune"), "segtune compiled": b0.get("segtune compiled")}, args)
    if args.profile:
        profile_b0(args, device)
    print(f"\ntotal {time.perf_counter() - started:.0f} s")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", help="folder for the generated Cityscapes-size dataset (reused if present)")
    parser.add_argument("--quick", action="store_true", help="compile at 512 only, a shorter loop, eager loop only")
    parser.add_argument("--smoke", action="store_true", help="toy sizes on the CPU, to check the script")
    parser.add_argument("--profile", action="store_true", help="print the top CUDA kernels of B0 1024 bf16")
    args = parser.parse_args(argv)
    workers = max(1, min((os.cpu_count() or 2) - 2, 14))
    args.dtype = torch.bfloat16
    args.variants, args.sizes, args.compile_sizes = ["mit-b0", "mit-b2"], [512, 1024], [512, 1024]
    args.batch_size, args.steps, args.num_train, args.num_val = 8, 10, 64, 8
    args.loader_workers, args.loader_batches, args.loop_workers = sorted({1, 4, workers}), 10, workers
    args.loop_size, args.loop_warmup, args.loop_steps, args.loop_compiled = 1024, 30, 150, True
    args.data_overrides = []
    if args.quick:
        args.compile_sizes, args.loop_steps, args.loop_compiled = [512], 100, False
    if args.smoke:
        args.dtype, args.variants, args.sizes, args.compile_sizes = torch.float32, ["mit-b0"], [64], []
        args.batch_size, args.steps, args.num_train, args.num_val = 2, 2, 4, 1
        args.loader_workers, args.loader_batches, args.loop_workers = [0, 1], 2, 0
        args.loop_size, args.loop_warmup, args.loop_steps, args.loop_compiled = 64, 1, 2, False
        args.data_overrides = [
            "augment.crop_size=64",
            "augment.scale=[128,64]",
            "eval.mode=whole",
            "eval.resize=[128,64]",
        ]
    return args


if __name__ == "__main__":
    main()
