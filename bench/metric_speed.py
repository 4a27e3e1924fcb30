"""Mean-IoU speed on Cityscapes-size maps: segtune's streaming MeanIoU vs evaluate's mean_iou algorithm.

segtune is timed both ways it is used: `MeanIoU(num_labels=K)` with `update`, and evaluate's pattern,
`MeanIoU()` with `add_batch` and `compute(num_labels=K, ignore_index=...)` (num_labels known only at
the end). `evaluate.load("mean_iou")` needs the Hub, so the reference is tests/mean_iou_reference.py: the
NumPy restatement of evaluate's algorithm (masked `np.histogram`s, map by map) that the parity
tests use. Another line times `np.bincount` after boolean-mask indexing, the usual fast rewrite,
which segtune's single counting pass is meant to beat. All run on the same maps in one process, one after
the other in each repeat, so machine noise hits them alike; the results must be equal. All of them
run on one thread (segtune's CPU chunks are too small for torch's thread pool, on purpose).

A fourth line times what `evaluate.load("mean_iou")` users pay: evaluate's own add_batch / compute
machinery with the canonical metric's features (each map PNG-encoded into an Arrow cache, then
decoded) around the same algorithm. It is slow, so it runs once (`--skip-evaluate-pipeline`: not at all).

    PYTHONPATH=. python bench/metric_speed.py                     # 100 maps of 1024x2048, 19 classes: ~80 s on 2 cores
    PYTHONPATH=. python bench/metric_speed.py --maps 20 --repeats 5 --skip-evaluate-pipeline
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import datasets
import evaluate
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root: segtune and tests/

from segtune.metrics import MeanIoU, metrics_from_confusion
from tests.mean_iou_reference import reference_mean_iou

IGNORE_INDEX = 255


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--maps", type=int, default=100)
    parser.add_argument("--height", type=int, default=1024)
    parser.add_argument("--width", type=int, default=2048)
    parser.add_argument("--num-labels", type=int, default=19)
    parser.add_argument("--batch", type=int, default=1, help="maps per MeanIoU.update call")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skip-evaluate-pipeline", action="store_true", help="do not time evaluate's Arrow pipeline")
    return parser.parse_args()


def make_maps(args: argparse.Namespace) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, H, W) int64 predictions and references, as a model's argmax and a collated label batch give them.

    References are 32x32-pixel cells of random classes with ~5% ignored pixels; predictions agree
    with them on ~80% of pixels, so IoUs are far from 0 and 1.
    """
    generator = torch.Generator().manual_seed(0)
    shape = (args.maps, args.height, args.width)
    references = torch.empty(shape, dtype=torch.int64)
    predictions = torch.empty(shape, dtype=torch.int64)
    for i in range(args.maps):
        cells = torch.randint(0, args.num_labels, (args.height // 32 + 1, args.width // 32 + 1), generator=generator)
        reference = cells.repeat_interleave(32, 0).repeat_interleave(32, 1)[: args.height, : args.width]
        noise = torch.rand(args.height, args.width, generator=generator)
        other = torch.randint(0, args.num_labels, (args.height, args.width), generator=generator)
        predictions[i] = torch.where(noise < 0.8, reference, other)
        references[i] = reference.masked_fill(noise > 0.95, IGNORE_INDEX)
    return predictions, references


def segtune_streaming(predictions: torch.Tensor, references: torch.Tensor, args: argparse.Namespace) -> dict:
    metric = MeanIoU(num_labels=args.num_labels, ignore_index=IGNORE_INDEX)
    for start in range(0, len(predictions), args.batch):
        metric.update(predictions[start : start + args.batch], references[start : start + args.batch])
    return metric.compute()


def segtune_deferred(predictions: torch.Tensor, references: torch.Tensor, args: argparse.Namespace) -> dict:
    # evaluate's pattern: nothing known until compute()
    metric = MeanIoU()
    for start in range(0, len(predictions), args.batch):
        batch = slice(start, start + args.batch)
        metric.add_batch(predictions=predictions[batch], references=references[batch])
    return metric.compute(num_labels=args.num_labels, ignore_index=IGNORE_INDEX)


def evaluate_algorithm(predictions: torch.Tensor, references: torch.Tensor, args: argparse.Namespace) -> dict:
    return reference_mean_iou(predictions.numpy(), references.numpy(), args.num_labels, IGNORE_INDEX)


def masked_bincount(predictions: torch.Tensor, references: torch.Tensor, args: argparse.Namespace) -> dict:
    # valid here because every value is a class or IGNORE_INDEX; segtune also handles the others
    k = args.num_labels
    matrix = np.zeros(k * k, dtype=np.int64)
    for prediction, reference in zip(predictions.numpy(), references.numpy()):
        keep = reference != IGNORE_INDEX
        matrix += np.bincount(reference[keep] * k + prediction[keep], minlength=k * k)
    return metrics_from_confusion(matrix.reshape(k, k))


SEGTUNE = {
    "segtune MeanIoU(num_labels) update": segtune_streaming,
    "segtune MeanIoU() add_batch, deferred": segtune_deferred,
}
CONTENDERS: dict[str, Callable[[torch.Tensor, torch.Tensor, argparse.Namespace], dict]] = {
    **SEGTUNE,
    "evaluate mean_iou algorithm": evaluate_algorithm,
    "np.bincount, boolean mask": masked_bincount,
}


class ArrowMeanIoU(evaluate.Metric):
    """evaluate's `mean_iou` as `evaluate.load` runs it: Image features, an Arrow cache, then the algorithm."""

    def _info(self) -> evaluate.MetricInfo:
        image = datasets.Image()  # the canonical metric's feature type for both inputs
        features = datasets.Features(predictions=image, references=image)
        return evaluate.MetricInfo(description="", citation="", features=features)

    def _compute(self, predictions: list, references: list, num_labels: int, ignore_index: int) -> dict:
        arrays = [np.array(p) for p in predictions], [np.array(r) for r in references]  # decoded PIL images
        return reference_mean_iou(*arrays, num_labels, ignore_index)


def evaluate_pipeline(predictions: torch.Tensor, references: torch.Tensor, args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory() as cache, warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # datasets: "Downcasting array dtype int64 to int32" for Pillow
        metric = ArrowMeanIoU(cache_dir=cache)
        for start in range(0, len(predictions), args.batch):
            batch = slice(start, start + args.batch)
            metric.add_batch(predictions=list(predictions[batch].numpy()), references=list(references[batch].numpy()))
        return metric.compute(num_labels=args.num_labels, ignore_index=IGNORE_INDEX)


def assert_equal_results(ours: dict, expected: dict, name: str) -> None:
    assert list(ours) == list(expected), (name, list(ours), list(expected))
    for key, value in expected.items():
        np.testing.assert_array_equal(ours[key], value, err_msg=f"{name}: {key}")


PIPELINE = "evaluate pipeline (PNG + Arrow cache)"


def main() -> None:
    args = parse_args()
    start = time.perf_counter()
    predictions, references = make_maps(args)
    print(
        f"{args.maps} maps of {args.height}x{args.width}, {args.num_labels} classes, int64; "
        f"built in {time.perf_counter() - start:.1f} s"
    )
    times: dict[str, list[float]] = {name: [] for name in CONTENDERS}
    results: dict[str, dict] = {}
    for _ in range(args.repeats):
        for name, contender in CONTENDERS.items():
            start = time.perf_counter()
            results[name] = contender(predictions, references, args)
            times[name].append(time.perf_counter() - start)

    if not args.skip_evaluate_pipeline:
        start = time.perf_counter()
        results[PIPELINE] = evaluate_pipeline(predictions, references, args)
        times[PIPELINE] = [time.perf_counter() - start]

    names = list(results)
    for name in names[1:]:
        assert_equal_results(results[names[0]], results[name], name)
    medians = {name: statistics.median(seconds) for name, seconds in times.items()}
    for name, seconds in medians.items():
        runs = f"{len(times[name])} run{'s' if len(times[name]) > 1 else ''}"
        print(f"{name:<40} median {seconds:7.3f} s  ({1000 * seconds / args.maps:6.1f} ms a map, {runs})")
    for name in SEGTUNE:
        report_ratios(name, medians, args)
    print(f"results equal: True, {len(names)} ways (mean_iou {results[names[0]]['mean_iou']:.6f})")


def report_ratios(name: str, medians: dict[str, float], args: argparse.Namespace) -> None:
    """How many times faster `name` is than each non-segtune contender (medians of the same run)."""
    ours = medians[name]
    print(f"{name}:")
    if not args.skip_evaluate_pipeline:
        # What `evaluate.load("mean_iou")` costs its users: the segtune target (>= 20x) is set against this.
        ratio = medians[PIPELINE] / ours
        verdict = "met" if ratio >= 20 else "NOT met"
        print(f"  {ratio:5.1f}x faster than evaluate's mean_iou as users run it (target >= 20x: {verdict})")
    print(
        f"  {medians['evaluate mean_iou algorithm'] / ours:5.1f}x faster than evaluate's bare algorithm (no Arrow cache)"
    )
    print(f"  {medians['np.bincount, boolean mask'] / ours:5.2f}x faster than np.bincount with a boolean mask")


if __name__ == "__main__":
    main()
