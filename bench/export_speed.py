"""Inference speed of an exported model: PyTorch eager vs ONNX Runtime, images per second, in one run.

For each variant (random weights, 19 classes) the model is exported once by `segtune export`'s own code
(dynamic batch, height and width). Each (variant, size) is then timed in a fresh child process, where both
sides run the same input, batch 1, alternately step by step, so machine noise hits both alike: medians and
their ratio are what to read. ONNX Runtime runs through segtune's backend (`OnnxRuntimeModel`: torch tensor
in, logits out), as `segtune predict --onnx` does. A child per cell keeps one cell's memory (ONNX Runtime's
arena keeps its peak) from adding to the next one's.

- CPU: PyTorch eager fp32 and ONNX Runtime fp32 (CPUExecutionProvider), with the same number of threads.
- On a CUDA machine, also: PyTorch eager bf16 (autocast), PyTorch compiled bf16 (`torch.compile`), and ONNX
  Runtime's CUDAExecutionProvider (fp32) where onnxruntime-gpu is installed.
- `--memory`: also the peak RSS each CPU side adds for one image, each alone in a fresh process (the rise of
  VmHWM over the resident size before the image, the peak reset through /proc/self/clear_refs).

    python bench/export_speed.py                 # B0 and B2, 512x512 and 1024x2048, 7 timed runs per cell
    python bench/export_speed.py --quick         # 3 timed runs: a few minutes on 2 cores
    python bench/export_speed.py --smoke         # a toy model at 64x64: checks the script (tests/test_bench.py)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from transformers import SegformerImageProcessor

from segtune.export.exporter import DEFAULT_OPSET, write_export
from segtune.export.graph import GraphOptions
from segtune.export.runtime import OnnxRuntimeModel
from segtune.models.mix_transformer import MixTransformerConfig, MixTransformerForSemanticSegmentation

NUM_LABELS = 19
TOY = dict(depths=[1, 1, 1, 1], hidden_sizes=[8, 8, 16, 16], num_attention_heads=[1, 1, 2, 2], decoder_hidden_size=16)
CPU_SIDES = ("PyTorch eager fp32 (CPU)", "ONNX Runtime fp32 (CPU)")
ALL_SIDES = (*CPU_SIDES, "PyTorch eager bf16 (CUDA)", "PyTorch compiled bf16 (CUDA)", "ONNX Runtime fp32 (CUDA)")


def build(variant: str) -> MixTransformerForSemanticSegmentation:
    """The variant with seeded random weights: every process builds the same model."""
    torch.manual_seed(0)
    config = MixTransformerConfig(**TOY, num_labels=NUM_LABELS) if variant == "toy" else None
    config = config or MixTransformerConfig.from_variant(variant, num_labels=NUM_LABELS)
    return MixTransformerForSemanticSegmentation(config).eval()


def export(variant: str, folder: Path) -> float:
    """Export the variant into `folder` as `segtune export` does (no check); return the seconds it took."""
    model = build(variant)
    start = time.perf_counter()
    write_export(model, SegformerImageProcessor(), folder, GraphOptions(), DEFAULT_OPSET, "bench")
    return time.perf_counter() - start


def sides(variant: str, folder: Path, threads: int, names: tuple[str, ...]) -> dict[str, tuple[Callable, str]]:
    """name -> (forward on pixel values, device), for the `names` this machine has."""
    import onnxruntime

    def bf16(module: torch.nn.Module) -> Callable:
        def forward(pixel_values: torch.Tensor):
            with torch.autocast("cuda", dtype=torch.bfloat16):
                return module(pixel_values=pixel_values)

        return forward

    makers: dict[str, Callable[[], tuple[Callable, str]]] = {
        CPU_SIDES[0]: lambda: (build(variant), "cpu"),
        CPU_SIDES[1]: lambda: (OnnxRuntimeModel(folder, ["CPUExecutionProvider"], threads), "cpu"),
        "PyTorch eager bf16 (CUDA)": lambda: (bf16(build(variant).cuda()), "cuda"),
        "PyTorch compiled bf16 (CUDA)": lambda: (bf16(torch.compile(build(variant).cuda())), "cuda"),
        "ONNX Runtime fp32 (CUDA)": lambda: (OnnxRuntimeModel(folder, ["CUDAExecutionProvider"]), "cuda"),
    }
    available = set(CPU_SIDES)
    if torch.cuda.is_available():
        available |= {"PyTorch eager bf16 (CUDA)", "PyTorch compiled bf16 (CUDA)"}
        if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
            available.add("ONNX Runtime fp32 (CUDA)")
    return {name: makers[name]() for name in names if name in available}


@torch.inference_mode()
def time_sides(cells: dict[str, tuple[Callable, str]], size: tuple[int, int], repeats: int, warmup: int) -> dict:
    """Median seconds per image of each side, the sides alternating step by step."""
    pixels = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(1))
    inputs = {device: pixels.to(device) for _, device in cells.values()}
    times: dict[str, list[float]] = {name: [] for name in cells}
    for step in range(warmup + repeats):
        for name, (forward, device) in cells.items():
            if device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            forward(pixel_values=inputs[device])
            if device == "cuda":
                torch.cuda.synchronize()
            if step >= warmup:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field))


def child(args: argparse.Namespace) -> None:
    """One cell, in this fresh process: print its medians (or one side's peak RSS rise) as a JSON line."""
    torch.set_num_threads(args.threads)
    names = tuple(args.child_sides)
    cells = sides(args.variants[0], Path(args.child_folder), args.threads, names)
    if args.child_memory:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")  # the peak RSS (VmHWM) back to the current RSS: what building the side cost is out
        before = _status_kib("VmRSS")
        time_sides(cells, args.sizes[0], 1, 0)
        peak = (_status_kib("VmHWM") - before) / 1024
        print(json.dumps({"peak_mib": peak}))
        return
    print(json.dumps(time_sides(cells, args.sizes[0], args.repeats, args.warmup)))


def run_child(args: argparse.Namespace, variant: str, size: tuple[int, int], folder: Path, *extra: str) -> dict:
    command = [sys.executable, __file__, "--child_folder", str(folder), "--variants", variant]
    command += ["--sizes", f"{size[0]}x{size[1]}", "--threads", str(args.threads)]
    command += ["--repeats", str(args.repeats), "--warmup", str(args.warmup), *extra]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{variant} {size}: the child process failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child_folder:
        return child(args)
    import onnxruntime

    names = tuple(n for n in ALL_SIDES if n in CPU_SIDES or not args.smoke)
    print(
        f"# torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, {args.threads} CPU threads, batch 1, "
        f"median of {args.repeats} (after {args.warmup} warm-up)\n"
    )
    memory = " PyTorch / ORT peak MiB |" if args.memory else ""
    print(f"| variant | size | side | ms/image | images/s | vs PyTorch eager fp32 (CPU) |{memory}")
    print("|---|---|---|---|---|---|" + ("---|" if args.memory else ""), flush=True)
    exports = []
    for variant in args.variants:
        with tempfile.TemporaryDirectory() as folder:
            exports.append(f"{variant} {export(variant, Path(folder)):.1f} s")
            for size in args.sizes:
                medians = run_child(args, variant, size, Path(folder), "--child_sides", *names)
                peaks = ""
                if args.memory:
                    found = [
                        run_child(args, variant, size, Path(folder), "--child_sides", n, "--child_memory")
                        for n in CPU_SIDES
                    ]
                    peaks = f" {found[0]['peak_mib']:.0f} / {found[1]['peak_mib']:.0f} |"
                base = medians[CPU_SIDES[0]]
                for name, median in medians.items():
                    row = f"{variant} | {size[0]}x{size[1]} | {name} | {median * 1000:.0f} | {1 / median:.2f}"
                    print(f"| {row} | {base / median:.2f}x |{peaks if name == CPU_SIDES[1] else ''}", flush=True)
    print(f"\nexport with torch.onnx.export(dynamo=True), dynamic batch, height and width: {', '.join(exports)}")


def _size(text: str) -> tuple[int, int]:
    height, width = text.lower().split("x")
    return int(height), int(width)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variants", nargs="+", default=["mit-b0", "mit-b2"], help="MiT variants (default: B0 B2)")
    parser.add_argument(
        "--sizes", nargs="+", type=_size, default=[(512, 512), (1024, 2048)], help="HxW (default: 512x512 1024x2048)"
    )
    parser.add_argument("--repeats", type=int, default=7, help="timed runs per cell (default: 7)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed runs per cell first (default: 2)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="CPU threads of both sides (default: all)")
    parser.add_argument("--memory", action="store_true", help="also each CPU side's peak RSS rise, alone")
    parser.add_argument("--quick", action="store_true", help="3 timed runs after 1 warm-up: a few minutes on 2 cores")
    parser.add_argument("--smoke", action="store_true", help="a toy model at 64x64, one run, CPU only")
    # A child process runs one cell (see `run_child`).
    parser.add_argument("--child_folder", help=argparse.SUPPRESS)
    parser.add_argument("--child_sides", nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--child_memory", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.warmup = 3, 1
    if args.smoke:
        args.variants, args.sizes, args.repeats, args.warmup = ["toy"], [(64, 64)], 1, 0
    return args


if __name__ == "__main__":
    main()
