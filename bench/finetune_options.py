"""The fine-tuning options against full fine-tuning, measured in one run on the CPU.

    PYTHONPATH=. python bench/finetune_options.py                  # ~6 minutes on 2 idle cores
    PYTHONPATH=. python bench/finetune_options.py --quick          # ~3 minutes: smaller crops, shorter runs
    PYTHONPATH=. python bench/finetune_options.py --demo-run outputs/demo    # start from a finished demo run

1. **Cost** (`--variant`, B2 by default, random weights: nothing is downloaded): full fine-tuning against LoRA
   (`model.peft`, segtune's default targets: the attention's q, kv and proj) and LoRA with the Mix-FFN linears
   too (fc1, fc2). Each step is segtune's own (`loop.train_step`: synthetic crops of `--size`, batch `--batch`,
   forward, loss, backward, AdamW over the recipe's parameter groups); the variants alternate step by step in one
   process, so machine noise hits all alike, and the median is reported. Peak memory is the rise of the peak RSS
   over the prepared run's resting footprint during the first steps (gradients, optimizer state, activations),
   in a fresh process per variant; that process also writes a checkpoint as a run does (Accelerate's state) and,
   for LoRA, the adapter alone, and reports their sizes and the trainable parameters (peft's count).
2. **Losses**: the step time with each `loss:` section (ce, ce with `class_weights: auto`, ohem, focal, dice,
   jaccard, lovasz, ce + dice) against the model's own cross-entropy, the same steps as part 1 taking turns.
3. **Quality**: the demo (B0 trained from random weights on the synthetic scenes; `--demo-run` reuses a finished
   one), then fine-tuned on a second synthetic dataset (`data.synthetic.seed` and `num_classes` differ: other
   scenes, other class hues and shapes, a new classifier) with each variant for the same steps and learning rate;
   the mIoU of each, and each run's wall time.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from segtune.models.lora import is_lora, save_adapter
from segtune.recipe import Recipe, load_recipe
from segtune.train import loop, train

FFN_TARGETS = "model.peft.target_modules=[attn.q,attn.kv,attn.proj,mlp.fc1,mlp.fc2]"
VARIANTS = {
    "full fine-tuning": [],
    "LoRA, attention (default)": ["model.peft.method=lora"],
    "LoRA, attention + Mix-FFN": ["model.peft.method=lora", FFN_TARGETS],
}
QUIET = ["logging.report_to=[none]", "eval.num_visualizations=0"]


# -- 1. cost -------------------------------------------------------------------------------------------------------


def cost_recipe(args: argparse.Namespace, variant: str, output_dir: Path, *extra: str) -> Recipe:
    """A recipe whose steps are the paper's (augmentations, groups, head lr x10) on synthetic crops of `--size`,
    with the overrides of `VARIANTS[variant]` and `extra`."""
    size = args.size
    return load_recipe(
        "demo.yaml",
        [
            f"data.synthetic.image_size={size}",
            "data.synthetic.num_train=16",
            "data.synthetic.num_eval=1",
            f"augment.scale=[{size},{size}]",
            f"augment.crop_size={size}",
            f"train.per_device_batch_size={args.batch}",
            f"train.reference_batch_size={args.batch}",
            "data.num_workers=0",
            f"model.variant={args.variant}",
            "model.drop_path_rate=0.1",
            "optim.lr=6e-5",
            "optim.head_lr_mult=10",
            "optim.warmup_steps=10",
            "train.max_steps=10000",
            f"model.peft.r={args.r}",
            f"train.output_dir={output_dir}",
            *QUIET,
            *VARIANTS[variant],
            *extra,
        ],
    )


def prepared_step(recipe: Recipe) -> tuple[loop.Run, Callable[[], None]]:
    run = loop.prepare_run(recipe, loop.make_accelerator(recipe))
    batches = loop.micro_batches(run)
    return run, lambda: loop.train_step(run, batches)


def step_times(args: argparse.Namespace, work: Path) -> dict[str, float]:
    """Median seconds per training step of each variant, the variants alternating step by step."""
    steps = {name: prepared_step(cost_recipe(args, name, work / f"time-{i}"))[1] for i, name in enumerate(VARIANTS)}
    return alternating_medians(steps, args.repeats)


def alternating_medians(steps: dict[str, Callable[[], None]], repeats: int) -> dict[str, float]:
    """Median seconds of each step function, after one untimed call each, taking turns call by call."""
    for step in steps.values():
        step()  # warm-up: first-call allocations, oneDNN primitives
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field))


def _size_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6


def cost_child(args: argparse.Namespace, variant: str) -> dict:
    """In this (fresh) process: peak memory over the first steps, checkpoint and adapter sizes, parameters."""
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        run, step = prepared_step(cost_recipe(args, variant, work / "run"))
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")  # reset the peak RSS (VmHWM) to the current RSS
        base = _status_kib("VmRSS")
        for _ in range(args.memory_steps):
            step()
        peak = (_status_kib("VmHWM") - base) / 1024
        model = run.accelerator.unwrap_model(run.model)
        if is_lora(model):
            trainable, total = model.get_nb_trainable_parameters()
            save_adapter(model, work / "adapter")
            adapter = _size_mb(work / "adapter")
        else:
            trainable = total = sum(p.numel() for p in model.parameters())
            adapter = None
        checkpoint = loop.checkpoint(run)  # as a run saves: Accelerate's state, the manifest
        return {
            "peak_mib": peak,
            "checkpoint_mb": _size_mb(checkpoint),
            "adapter_mb": adapter,
            "trainable": trainable,
            "total": total,
        }


def cost_in_child(args: argparse.Namespace, variant: str) -> dict:
    """`cost_child` in a fresh interpreter, so no variant's allocations colour another's."""
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}  # freed tensors go back to the OS: RSS tracks live ones
    options = ["--variant", args.variant, "--size", str(args.size), "--batch", str(args.batch), "--r", str(args.r)]
    command = [sys.executable, __file__, "--cost-child", variant, "--memory-steps", str(args.memory_steps), *options]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"the cost of {variant!r} could not be measured:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def cost_table(args: argparse.Namespace, work: Path) -> dict[str, dict]:
    times = step_times(args, work)
    costs = {name: {"step_s": times[name], **cost_in_child(args, name)} for name in VARIANTS}
    full = costs["full fine-tuning"]
    print(
        f"\n## Cost: {args.variant}, {args.size}x{args.size} crops, batch {args.batch}, LoRA r={args.r}, "
        f"{torch.get_num_threads()} threads; step: median of {args.repeats}, alternating\n"
    )
    print("| | ms/step | peak MiB | trainable parameters | checkpoint MB | adapter MB |")
    print("|---|---|---|---|---|---|")
    for name, c in costs.items():
        share = f"{c['trainable']:,} ({100 * c['trainable'] / c['total']:.1f}%)"
        adapter = f"{c['adapter_mb']:.1f}" if c["adapter_mb"] is not None else "-"
        print(
            f"| {name} | {1000 * c['step_s']:.0f} ({c['step_s'] / full['step_s']:.2f}x) "
            f"| {c['peak_mib']:.0f} ({c['peak_mib'] / full['peak_mib']:.2f}x) | {share} "
            f"| {c['checkpoint_mb']:.1f} ({c['checkpoint_mb'] / full['checkpoint_mb']:.2f}x) | {adapter} |"
        )
    return costs


# -- 2. losses -----------------------------------------------------------------------------------------------------


LOSSES = {
    "the model's own loss (CE)": [],
    "ce": ["loss.terms=[ce]"],
    "ce, class_weights auto": ["loss.terms=[ce]", "loss.class_weights=auto"],
    "ohem": ["loss.terms=[ohem]"],
    "focal": ["loss.terms=[focal]"],
    "dice": ["loss.terms=[dice]"],
    "jaccard": ["loss.terms=[jaccard]"],
    "lovasz": ["loss.terms=[lovasz]"],
    "ce + dice": ["loss.terms=[ce, dice]"],
}


def loss_costs(args: argparse.Namespace, work: Path) -> dict[str, float]:
    """Seconds per full-fine-tuning step with each `loss:` section, the losses alternating step by step; the
    ratios are to the model's own cross-entropy (no loss section)."""
    steps = {
        name: prepared_step(cost_recipe(args, "full fine-tuning", work / f"loss-{i}", *overrides))[1]
        for i, (name, overrides) in enumerate(LOSSES.items())
    }
    times = alternating_medians(steps, args.repeats)
    base = times["the model's own loss (CE)"]
    print(
        f"\n## Losses: the cost of each loss relative to CE ({args.variant}, {args.size}x{args.size} crops, "
        f"batch {args.batch}, full fine-tuning; step: median of {args.repeats}, alternating)\n"
    )
    print("| loss section | ms/step | vs the model's own CE |")
    print("|---|---|---|")
    for name, seconds in times.items():
        print(f"| {name} | {1000 * seconds:.0f} | {seconds / base:.2f}x |")
    return times


# -- 3. quality ----------------------------------------------------------------------------------------------------


def quiet_train(recipe: Recipe) -> dict:
    """`train`, its per-class table and lines kept off this report (the progress bar stays, on stderr)."""
    with contextlib.redirect_stdout(io.StringIO()):
        return train(recipe)


def demo_run(args: argparse.Namespace, work: Path) -> Path:
    """A finished demo run: `--demo-run`, else the demo trained here for `--demo-steps`."""
    if args.demo_run:
        return Path(args.demo_run)
    out = work / "demo"
    steps = args.demo_steps
    overrides = [f"train.max_steps={steps}", f"train.eval_steps={steps}", f"train.save_steps={steps}", *QUIET]
    quiet_train(load_recipe("demo.yaml", [*overrides, *args.data, f"train.output_dir={out}"]))
    return out


def finetune(args: argparse.Namespace, base: Path, variant: str, out: Path) -> tuple[float, float]:
    """mIoU and wall seconds of `variant` fine-tuned from `base` on the second synthetic dataset."""
    steps = args.finetune_steps
    recipe = load_recipe(
        "demo.yaml",
        [
            f"data.synthetic.seed={args.second_seed}",
            f"data.synthetic.num_classes={args.second_classes}",
            "model.init=pretrained",
            f"model.init_from={base}",
            f"train.max_steps={steps}",
            f"train.eval_steps={steps}",
            f"train.save_steps={steps}",
            f"optim.lr={args.lr}",
            "optim.head_lr_mult=10",
            f"optim.warmup_steps={max(steps // 10, 1)}",
            f"model.peft.r={args.r}",
            f"train.output_dir={out}",
            *QUIET,
            *args.data,
            *VARIANTS[variant],
        ],
    )
    start = time.perf_counter()
    results = quiet_train(recipe)
    return float(results["mean_iou"]), time.perf_counter() - start


def quality_table(args: argparse.Namespace, work: Path) -> dict[str, float]:
    start = time.perf_counter()
    base = demo_run(args, work)
    demo_seconds = time.perf_counter() - start
    base_miou = json.loads((base / "metrics.json").read_text())["mean_iou"]
    results = {name: finetune(args, base, name, work / f"finetune-{i}") for i, name in enumerate(VARIANTS)}
    print(
        f"\n## Quality: from the demo ({base}, mIoU {base_miou:.4f}"
        + (f", trained here in {demo_seconds:.0f} s" if not args.demo_run else "")
        + f") to synthetic seed {args.second_seed} with {args.second_classes} classes: {args.finetune_steps} steps, "
        f"lr {args.lr:g} (head x10), LoRA r={args.r}\n"
    )
    print("| | mIoU | vs full | wall s |")
    print("|---|---|---|---|")
    full = results["full fine-tuning"][0]
    for name, (miou, seconds) in results.items():
        print(f"| {name} | {miou:.4f} | {miou - full:+.4f} | {seconds:.0f} |")
    return {name: miou for name, (miou, _) in results.items()}


# -- the command line ----------------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", default="mit-b2", help="MiT variant of the cost part (default: mit-b2)")
    parser.add_argument("--size", type=int, default=512, help="crop size of the cost part (default: 512)")
    parser.add_argument("--batch", type=int, default=2, help="batch of the cost part (default: 2)")
    parser.add_argument("--repeats", type=int, default=5, help="timed steps per variant (default: 5)")
    parser.add_argument("--memory-steps", type=int, default=2, help="steps watched for peak memory (default: 2)")
    parser.add_argument("--r", type=int, default=16, help="LoRA rank (default: 16, the recipe default)")
    parser.add_argument("--demo-run", help="a finished demo run to start from (default: train one here)")
    parser.add_argument("--demo-steps", type=int, default=600, help="steps of the demo trained here (default: 600)")
    parser.add_argument("--finetune-steps", type=int, default=300, help="steps of each fine-tune (default: 300)")
    parser.add_argument("--lr", type=float, default=2e-4, help="fine-tuning lr, head x10 (default: 2e-4)")
    parser.add_argument("--second-seed", type=int, default=1, help="data.synthetic.seed of the second dataset")
    parser.add_argument("--second-classes", type=int, default=5, help="its data.synthetic.num_classes (default: 5)")
    parser.add_argument("--work", help="where the runs are written (default: a temporary folder, removed)")
    parser.add_argument("--skip", nargs="+", default=[], choices=["cost", "losses", "quality"])
    parser.add_argument("--quick", action="store_true", help="256 px crops, 3 repeats, 300 + 150 steps")
    parser.add_argument("--smoke", action="store_true", help="every part at toy sizes, seconds: for the tests")
    parser.add_argument("--cost-child", choices=list(VARIANTS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.data = []  # overrides of the quality part's synthetic data (the demo's by default)
    if args.quick:
        args.size, args.repeats, args.demo_steps, args.finetune_steps = 256, 3, 300, 150
    if args.smoke:
        args.variant, args.size, args.repeats, args.memory_steps = "mit-b0", 64, 1, 1
        args.demo_steps, args.finetune_steps = 2, 2
        args.data = ["data.synthetic.num_train=8", "data.synthetic.num_eval=2", "data.synthetic.image_size=64"]
        args.data += ["augment.scale=[64,64]", "augment.crop_size=64", "data.num_workers=0"]
    return args


def main() -> None:
    args = parse_args()
    if args.cost_child:
        print(json.dumps(cost_child(args, args.cost_child)))
        return
    work = Path(args.work or tempfile.mkdtemp(prefix="finetune_options-"))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; runs in {work}")
    results: dict = {}
    try:
        if "cost" not in args.skip:
            results["cost"] = cost_table(args, work)
        if "losses" not in args.skip:
            results["losses"] = loss_costs(args, work)
        if "quality" not in args.skip:
            results["quality"] = quality_table(args, work)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
