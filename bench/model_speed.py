"""Train-step and eval-forward speed and peak memory: transformers' Segformer vs segtune's MixTransformer.

Both models carry the same weights (converted with segtune's key map). Timings interleave the two
models step by step in one process, so machine noise hits both alike; the ratio is what to read.
Peak memory is measured in a fresh child process per (variant, model, mode): on GPU with
`torch.cuda.max_memory_allocated`, on CPU as the rise of the process's peak RSS during the steps.

    python bench/model_speed.py                      # B0 and B2, 512x512, batch 2, CPU (and GPU if present)
    python bench/model_speed.py --variants mit-b0 --repeats 5
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

import torch
from transformers import SegformerForSemanticSegmentation

from segtune.models.mix_transformer import MixTransformerConfig, MixTransformerForSemanticSegmentation
from segtune.models.mix_transformer.convert_mix_transformer import mix_transformer_state_dict

NUM_LABELS = 19
MODES = ("train", "eval")
MODELS = ("transformers", "segtune")


def build_pair(variant: str, device: str) -> dict[str, torch.nn.Module]:
    """transformers' Segformer and segtune's MixTransformer with identical weights."""
    torch.manual_seed(0)
    config = MixTransformerConfig.from_variant(variant, num_labels=NUM_LABELS)
    reference = SegformerForSemanticSegmentation(config.to_segformer_config())
    ours = MixTransformerForSemanticSegmentation(config)
    ours.load_state_dict(mix_transformer_state_dict(reference.state_dict()), strict=True)
    return {"transformers": reference.to(device), "segtune": ours.to(device)}


def make_step(model: torch.nn.Module, mode: str, batch: int, size: int, device: str) -> Callable[[], None]:
    """One train step (forward + loss + backward) or one eval forward, on fixed random inputs."""
    generator = torch.Generator().manual_seed(1)
    pixels = torch.randn(batch, 3, size, size, generator=generator).to(device)
    labels = torch.randint(0, NUM_LABELS, (batch, size, size), generator=generator).to(device)
    model.train(mode == "train")

    def train() -> None:
        model(pixel_values=pixels, labels=labels).loss.backward()
        model.zero_grad(set_to_none=True)

    @torch.inference_mode()
    def evaluate() -> None:
        _ = model(pixel_values=pixels).logits

    return train if mode == "train" else evaluate


def timed(step: Callable[[], None], device: str) -> float:
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    step()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def time_pair(variant: str, mode: str, args: argparse.Namespace, device: str) -> dict[str, float]:
    """Median seconds per step of each model, measured alternately."""
    models = build_pair(variant, device)
    steps = {name: make_step(m, mode, args.batch, args.size, device) for name, m in models.items()}
    for step in steps.values():
        for _ in range(args.warmup):
            step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(args.repeats):
        for name, step in steps.items():
            times[name].append(timed(step, device))
    return {name: statistics.median(values) for name, values in times.items()}


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def peak_memory_child(variant: str, name: str, mode: str, args: argparse.Namespace, device: str) -> float:
    """In this (fresh) process: MiB the peak rises above the resting footprint during `args.repeats` steps."""
    model = build_pair(variant, device)[name]
    step = make_step(model, mode, args.batch, args.size, device)
    step()  # first-call allocations (e.g. oneDNN primitives) are not the model's working set
    if device == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        for _ in range(args.repeats):
            step()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")  # reset the peak-RSS counter (VmHWM) to the current RSS
    base = _rss_kib("VmRSS")
    for _ in range(args.repeats):
        step()
    return (_rss_kib("VmHWM") - base) / 1024


def peak_memory(variant: str, name: str, mode: str, args: argparse.Namespace, device: str) -> float:
    """Run `peak_memory_child` in a fresh interpreter so no model's allocations colour another's."""
    # A fixed mmap threshold makes glibc return every large tensor to the OS when freed, so RSS
    # follows live tensors instead of the allocator's high-water mark.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
    command = [
        sys.executable,
        __file__,
        "--memory-child",
        json.dumps([variant, name, mode, device]),
        "--batch",
        str(args.batch),
        "--size",
        str(args.size),
        "--repeats",
        "2",
    ]
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    return float(result.stdout.strip().splitlines()[-1])


def report(variant: str, mode: str, times: dict[str, float], memory: dict[str, float], device: str) -> str:
    ref, ours = times["transformers"], times["segtune"]
    return (
        f"| {variant} | {device} | {mode} | {ref * 1000:.0f} | {ours * 1000:.0f} | **{ref / ours:.2f}x** "
        f"| {memory['transformers']:.0f} | {memory['segtune']:.0f} | {memory['transformers'] / max(memory['segtune'], 1e-9):.2f}x |"
    )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", default=["mit-b0", "mit-b2"])
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--devices", nargs="+", default=None, help="default: cpu, plus cuda when available")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.memory_child:
        variant, name, mode, device = json.loads(args.memory_child)
        print(peak_memory_child(variant, name, mode, args, device))
        return
    devices = args.devices or ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}, {args.size}x{args.size}, "
        f"median of {args.repeats}"
    )
    print(
        "| variant | device | mode | transformers ms | segtune ms | speed-up | transformers peak MiB | segtune peak MiB | memory ratio |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for device in devices:
        for variant in args.variants:
            for mode in args.modes:
                times = time_pair(variant, mode, args, device)
                memory = {name: peak_memory(variant, name, mode, args, device) for name in MODELS}
                print(report(variant, mode, times, memory, device), flush=True)


if __name__ == "__main__":
    main()
