"""Inference speed of an exported model: PyTorch eager vs ONNX Runtime, images per second, in one run.

For each variant (random weights, 19 classes) the model is exported once by `segtune export`'s own code
(dynamic batch, height and width) and both sides run the same inputs, batch 1, alternately step by step, so
machine noise hits both alike: medians and their ratio are what to read. ONNX Runtime runs through
segtune's backend (`OnnxRuntimeModel`: torch tensor in, logits out), as `segtune predict --onnx` does.

- CPU: PyTorch eager fp32 and ONNX Runtime fp32 (CPUExecutionProvider), with the same number of threads.
- On a CUDA machine, also: PyTorch eager bf16 (autocast), PyTorch compiled bf16 (`torch.compile`), and ONNX
  Runtime's CUDAExecutionProvider (fp32) where onnxruntime-gpu is installed.

    python bench/export_speed.py                 # B0 and B2, 512x512 and 1024x2048, 7 timed runs per cell
    python bench/export_speed.py --quick         # 3 timed runs: a few minutes on 2 cores
    python bench/export_speed.py --smoke         # a toy model at 64x64: checks the script (tests/test_bench.py)
"""

from __future__ import annotations

import argparse
import os
import statistics
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


def build(variant: str) -> MixTransformerForSemanticSegmentation:
    torch.manual_seed(0)
    config = MixTransformerConfig(**TOY, num_labels=NUM_LABELS) if variant == "toy" else None
    config = config or MixTransformerConfig.from_variant(variant, num_labels=NUM_LABELS)
    return MixTransformerForSemanticSegmentation(config).eval()


def export(model: torch.nn.Module, folder: Path) -> float:
    """Export `model` into `folder` as `segtune export` does (no check); return the seconds it took."""
    start = time.perf_counter()
    write_export(model, SegformerImageProcessor(), folder, GraphOptions(), DEFAULT_OPSET, "bench")
    return time.perf_counter() - start


def runners(model: torch.nn.Module, folder: Path, cuda: bool, threads: int) -> dict[str, tuple[Callable, str]]:
    """name -> (forward on pixel values, device), every side this machine has."""
    import onnxruntime

    cells: dict[str, tuple[Callable, str]] = {
        "PyTorch eager fp32 (CPU)": (model, "cpu"),
        "ONNX Runtime fp32 (CPU)": (OnnxRuntimeModel(folder, ["CPUExecutionProvider"], threads), "cpu"),
    }
    if not cuda:
        return cells
    gpu = build_like(model).to("cuda")

    def bf16(m: torch.nn.Module) -> Callable:
        def forward(pixel_values: torch.Tensor):
            with torch.autocast("cuda", dtype=torch.bfloat16):
                return m(pixel_values=pixel_values)

        return forward

    cells["PyTorch eager bf16 (CUDA)"] = (bf16(gpu), "cuda")
    cells["PyTorch compiled bf16 (CUDA)"] = (bf16(torch.compile(gpu, dynamic=False)), "cuda")
    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        cells["ONNX Runtime fp32 (CUDA)"] = (OnnxRuntimeModel(folder, ["CUDAExecutionProvider"]), "cuda")
    return cells


def build_like(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of `model` with the same weights (the GPU side must not move the CPU side's model)."""
    copy = MixTransformerForSemanticSegmentation(model.config).eval()
    copy.load_state_dict(model.state_dict())
    return copy


@torch.inference_mode()
def time_cells(cells: dict[str, tuple[Callable, str]], size: tuple[int, int], args: argparse.Namespace) -> dict:
    """Median seconds per image of each cell, the cells alternating step by step."""
    pixels = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(1))
    inputs = {device: pixels.to(device) for _, device in cells.values()}
    times: dict[str, list[float]] = {name: [] for name in cells}
    for step in range(args.warmup + args.repeats):
        for name, (forward, device) in cells.items():
            if device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            forward(pixel_values=inputs[device])
            if device == "cuda":
                torch.cuda.synchronize()
            if step >= args.warmup:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    cuda = torch.cuda.is_available() and not args.smoke
    import onnxruntime

    print(
        f"# torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, {args.threads} CPU threads, batch 1, "
        f"median of {args.repeats} (after {args.warmup} warm-up)\n"
    )
    rows, exports = [], []
    for variant in args.variants:
        model = build(variant)
        with tempfile.TemporaryDirectory() as folder:
            exports.append(f"{variant} {export(model, Path(folder)):.1f} s")
            cells = runners(model, Path(folder), cuda, args.threads)
            for height, width in args.sizes:
                medians = time_cells(cells, (height, width), args)
                base = medians["PyTorch eager fp32 (CPU)"]
                for name, median in medians.items():
                    row = f"{variant} | {height}x{width} | {name} | {median * 1000:.0f} | {1 / median:.2f}"
                    rows.append(f"| {row} | {base / median:.2f}x |")
    print(f"export with torch.onnx.export(dynamo=True), dynamic batch, height and width: {', '.join(exports)}\n")
    print("| variant | size | side | ms/image | images/s | vs PyTorch eager fp32 (CPU) |")
    print("|---|---|---|---|---|---|")
    print("\n".join(rows))


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
    parser.add_argument("--quick", action="store_true", help="3 timed runs after 1 warm-up: a few minutes on 2 cores")
    parser.add_argument("--smoke", action="store_true", help="a toy model at 64x64, one run, CPU only")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.warmup = 3, 1
    if args.smoke:
        args.variants, args.sizes, args.repeats, args.warmup = ["toy"], [(64, 64)], 1, 0
    return args


if __name__ == "__main__":
    main()
