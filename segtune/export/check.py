"""The export checks itself: ONNX Runtime against PyTorch on inputs of sizes the graph was not traced at, and
both models' mIoU on the recipe's evaluation split, scored by `segtune evaluate`'s own code.

Targets (the brief of issue 15):
- parity: the largest logit difference at most 1e-4 in fp32, 1e-2 in fp16, and the same argmax on at least
  99.9% of pixels (class maps of a `--labels` graph: equal on at least 99.9% of pixels). Missing one fails an
  fp32 export; in fp16 it is a warning, as ONNX Runtime's fp16 kernels differ from one provider to the next.
- mIoU: within 0.1 points of PyTorch's; an fp32 export fails beyond that, with both numbers.

The PyTorch side is always the model in fp32, as trained: an fp16 export is measured against what it replaces.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import torch

from ..errors import DatasetError, ExportError
from ..evaluation import evaluate_checkpoint
from ..models.mix_transformer import CheckpointError
from ..recipe import Recipe
from .graph import INPUT_NAME, ExportedGraph, GraphOptions
from .runtime import OnnxRuntimeModel, open_session

logger = logging.getLogger(__name__)

# (batch, height, width): odd sizes, none of them the traced one (exporter.TRACE_SHAPE, 2 x 64 x 96).
CHECK_SHAPES = ((1, 97, 131), (2, 160, 224), (1, 250, 190))
MAX_LOGIT_DIFF = {"fp32": 1e-4, "fp16": 1e-2}
MIN_AGREEMENT = 0.999
MAX_MIOU_POINTS = 0.1


def _inputs(shape: tuple[int, ...], options: GraphOptions, generator: torch.Generator) -> torch.Tensor:
    if options.preprocess:
        return torch.randint(0, 256, shape, dtype=torch.uint8, generator=generator)
    pixels = torch.randn(shape, generator=generator)
    return pixels.half() if options.half else pixels


def check_parity(model: torch.nn.Module, processor: Any, folder: Path, options: GraphOptions) -> dict:
    """Run the exported graph in `folder` with ONNX Runtime and the same pipeline in PyTorch (fp32) on
    `CHECK_SHAPES`; return the largest logit difference and the share of pixels with the same argmax (or the
    same class, for a `labels` graph), next to their targets.

    Raises:
        ExportError: an fp32 export misses a target (both numbers and the targets in the message).
    """
    try:
        session = open_session(folder)
    except CheckpointError as error:  # e.g. an opset newer than this onnxruntime knows
        raise ExportError(f"ONNX Runtime cannot run the exported graph: {error}") from None
    reference = ExportedGraph(model, dataclasses.replace(options, half=False), processor).eval()
    generator = torch.Generator().manual_seed(0)
    largest, equal, total = 0.0, 0, 0
    for batch, height, width in CHECK_SHAPES:
        inputs = _inputs((batch, 3, height, width), options, generator)
        with torch.inference_mode():
            expected = reference(inputs if options.preprocess else inputs.float())
        found = torch.from_numpy(session.run(None, {INPUT_NAME: inputs.numpy()})[0])
        if options.labels:
            same = found.long() == expected.long()
        else:
            largest = max(largest, (found.float() - expected).abs().max().item())
            same = found.float().argmax(dim=1) == expected.argmax(dim=1)
        equal, total = equal + int(same.sum()), total + same.numel()
    precision = options.precision
    target = None if options.labels else MAX_LOGIT_DIFF[precision]
    report = {
        "shapes": [list(shape) for shape in CHECK_SHAPES],
        "precision": precision,
        "max_abs_logit_diff": None if options.labels else largest,
        "target_max_abs_logit_diff": target,
        "argmax_agreement": equal / total,
        "target_argmax_agreement": MIN_AGREEMENT,
    }
    report["passed"] = (target is None or largest <= target) and equal / total >= MIN_AGREEMENT
    if not report["passed"]:
        message = f"ONNX Runtime disagrees with PyTorch: {parity_line(report)}"
        if precision == "fp32":
            raise ExportError(message)
        logger.warning("%s", message)
    return report


def _without_compile(recipe: Recipe) -> Recipe:
    # torch.compile has nothing to compile in an ONNX Runtime call.
    return dataclasses.replace(recipe, eval=dataclasses.replace(recipe.eval, compile=False))


def check_miou(
    model_id: str,
    exported: OnnxRuntimeModel,
    recipe: Recipe,
    half: bool = False,
    reference: torch.nn.Module | None = None,
) -> dict:
    """mIoU of `model_id` (PyTorch, as `segtune evaluate` computes it) and of `exported` (ONNX Runtime, the
    same code and settings) on the recipe's evaluation split. `reference`: `model_id` already loaded (by
    `load_for_inference`), so that it is not loaded again.

    Raises:
        ExportError: an fp32 export (`half` False) more than 0.1 points from PyTorch (both mIoUs named).
        DatasetError: the evaluation split cannot be loaded.
        CheckpointError: the model predicts another number of classes than the data has.
    """
    expected, _ = evaluate_checkpoint(model_id, recipe, model=reference)
    found, _ = evaluate_checkpoint(model_id, _without_compile(recipe), model=exported)
    pytorch, onnxruntime = float(expected["mean_iou"]), float(found["mean_iou"])
    report = {
        "recipe": recipe.name,
        "split": recipe.data.eval_split,
        "mode": recipe.eval.mode,
        "miou_pytorch": pytorch,
        "miou_onnxruntime": onnxruntime,
        "difference_points": abs(pytorch - onnxruntime) * 100,
        "max_difference_points": MAX_MIOU_POINTS,
    }
    report["passed"] = report["difference_points"] <= MAX_MIOU_POINTS
    if not report["passed"]:
        message = f"the export's mIoU differs from PyTorch's: {miou_line(report)}"
        if not half:
            raise ExportError(message)
        logger.warning("%s", message)
    return report


def check_export(
    model_id: str,
    model: torch.nn.Module,
    processor: Any,
    folder: Path,
    options: GraphOptions,
    recipe: Recipe | None,
    required: bool = False,
) -> dict:
    """Both checks of the export in `folder`: parity always; the mIoU when there is a recipe whose evaluation
    split loads, and the graph takes and returns what the evaluation does (not `preprocess` or `labels`).

    `required` (`--check`): an evaluation split that cannot be loaded is an error, not a skipped check.

    Raises:
        ExportError: a check failed (see `check_parity`, `check_miou`).
        DatasetError: a required check's evaluation split cannot be loaded.
    """
    report: dict[str, Any] = {"parity": check_parity(model, processor, folder, options)}
    if options.preprocess or options.labels:
        skipped = (
            "the evaluation feeds normalised pixel values and averages logits (sliding windows, TTA): export without "
            "--preprocess and --labels to check the mIoU"
        )
    elif recipe is None:
        skipped = f"no recipe to evaluate with ({model_id} is not a run directory): pass --recipe"
    else:
        try:
            report["miou"] = check_miou(model_id, OnnxRuntimeModel(folder), recipe, options.half, reference=model)
            return report
        except DatasetError as error:
            if required:
                raise
            skipped = f"the evaluation split cannot be loaded ({error})"
    logger.warning("mIoU check skipped: %s", skipped)
    report["miou"] = {"skipped": skipped}
    return report


def parity_line(report: dict) -> str:
    """One line: the sizes, the largest difference and the agreement, each with its target."""
    sizes = ", ".join("x".join(map(str, shape)) for shape in report["shapes"])
    agreement = f"{report['argmax_agreement']:.3%} of pixels (target {report['target_argmax_agreement']:.1%})"
    if report["max_abs_logit_diff"] is None:
        return f"{report['precision']} class maps at {sizes} equal on {agreement}"
    return (
        f"{report['precision']} at {sizes}: largest logit difference {report['max_abs_logit_diff']:.1e} (target "
        f"{report['target_max_abs_logit_diff']:.0e}), same argmax on {agreement}"
    )


def miou_line(report: dict) -> str:
    """One line: both mIoUs, their difference and the limit; or why the check was skipped."""
    if "skipped" in report:
        return f"skipped: {report['skipped']}"
    return (
        f"{report['recipe']} {report['split']} ({report['mode']}): PyTorch {report['miou_pytorch']:.4f}, ONNX Runtime "
        f"{report['miou_onnxruntime']:.4f}, {report['difference_points']:.2f} points apart (limit "
        f"{report['max_difference_points']})"
    )
