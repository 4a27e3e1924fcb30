"""Export a model to ONNX, checked against PyTorch on logits and on the recipe's mIoU; ready to push.

    segtune export outputs/demo --format onnx                        # -> outputs/demo/onnx/
    segtune export outputs/demo --format onnx --half --opset 20
    segtune export outputs/demo --format onnx --preprocess --labels  # uint8 images in, class maps out
    segtune export user/segformer-b0-city --format onnx --output_dir b0-onnx --recipe cityscapes.yaml

Writes model.onnx (dynamic batch, height and width), config.json (class names), the image processor and
export.json (what is inside, and the check's figures). The check runs ONNX Runtime and PyTorch on three
input sizes, and evaluates both on the recipe's evaluation split (a run's own recipe.yaml by default) as
`segtune evaluate` does; a failed check writes nothing and exits 1. `segtune push RUN` uploads onnx/ too.
`python -m segtune.export` is the same command.
"""

from __future__ import annotations

import argparse
import json

from . import cli

# segtune.export.exporter.DEFAULT_OPSET, written out: importing it would load torch for `--help`.
DEFAULT_OPSET = 18


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="run directory, checkpoint directory or Hub id (segtune or transformers)")
    parser.add_argument("--format", choices=("onnx",), default="onnx", help="what to export to (default: %(default)s)")
    parser.add_argument("--output_dir", help="where to write (default: MODEL/onnx; required for a Hub id)")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, help="ONNX opset version (default: %(default)s)")
    parser.add_argument("--half", action="store_true", help="fp16 weights and activations (default: fp32)")
    parser.add_argument(
        "--preprocess",
        action="store_true",
        help="take uint8 images (B, 3, H, W) and normalise them in the graph, as the image processor; resizing "
        "stays outside (default: float pixel_values)",
    )
    parser.add_argument(
        "--labels",
        action="store_true",
        help="return class maps (B, H, W) at the input size, uint8 (int64 beyond 256 classes), upsampled and "
        "argmaxed in the graph (default: logits at 1/4 size)",
    )
    parser.add_argument(
        "--check",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="compare with PyTorch on logits at three sizes, and on mIoU over the recipe's evaluation split; "
        "--check requires both, --no-check skips them (default: logits always, mIoU when the recipe's data loads)",
    )
    parser.add_argument(
        "--recipe", help="recipe for the mIoU check: its data and eval settings (default: the run's recipe.yaml)"
    )
    cli.add_recipe_overrides(parser)


def run(args: argparse.Namespace) -> None:
    """Export, check, write; print what was written and the check's figures."""
    from ..errors import RecipeError
    from ..recipe import load_recipe

    recipe = None
    if args.recipe or args.set:
        from ..export.exporter import run_recipe

        recipe_file = args.recipe or run_recipe(args.model)
        if recipe_file is None:
            raise RecipeError(f"--set {' '.join(args.set)}: no recipe to apply it to; pass --recipe")
        recipe = load_recipe(recipe_file, args.set)
    cli.quiet_transformers()
    from ..export.check import miou_line, parity_line
    from ..export.exporter import default_output_dir, export_onnx

    target = args.output_dir or default_output_dir(args.model)

    description = export_onnx(
        args.model,
        target,
        half=args.half,
        preprocess=args.preprocess,
        labels=args.labels,
        opset=args.opset,
        check=args.check,
        recipe=recipe,
    )
    (graph_input,), (graph_output,) = description["inputs"], description["outputs"]
    print(
        f"exported {target}/{description['file']}: {_spec(graph_input)} -> {_spec(graph_output)} "
        f"({description['precision']}, opset {description['opset']}, {description['exporter']})"
    )
    if "check" in description:
        print(f"parity: {parity_line(description['check']['parity'])}")
        print(f"mIoU: {miou_line(description['check']['miou'])}")


def _spec(tensor: dict) -> str:
    return f"{tensor['name']} {tensor['dtype']} {json.dumps(tensor['shape'])}"
