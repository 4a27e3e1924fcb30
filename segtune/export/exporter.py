"""A checkpoint to an ONNX folder that has checked itself, ready to push with the run.

    export_onnx("outputs/demo")            # outputs/demo/onnx/: model.onnx, config.json,
                                           #   preprocessor_config.json, export.json
    export_onnx("user/name", "b0-onnx", half=True, preprocess=True, labels=True)

The graph comes from PyTorch's own exporter, `torch.onnx.export(..., dynamo=True)`: torch.export traces the
model with a symbolic batch, height and width, and onnxscript translates the traced graph into ONNX and
optimises it. It takes segtune's MixTransformer as it is (SDPA attention, channels-last views) and
transformers' Segformer alike. config.json is transformers' `SegformerConfig` for either arch (the same
function; nothing needs segtune or remote code to read it), with the class names and segtune's palette.

The export is made and checked in a staging folder beside `output_dir`, and moved there only once the check
has passed: a failed export writes nothing.
"""

from __future__ import annotations

import copy
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from transformers import PretrainedConfig

from .. import run_dir
from ..errors import ExportError
from ..models.loading import check_hub_id, load_for_inference
from ..recipe import Recipe, load_recipe
from .check import check_export
from .graph import INPUT_NAME, ExportedGraph, GraphOptions
from .runtime import MODEL_FILE, import_optional

logger = logging.getLogger(__name__)

DESCRIPTION_FILE = "export.json"
DEFAULT_OPSET = 18  # the oldest opset the dynamo exporter writes natively; what most runtimes read
EXPORTER = "torch.onnx.export(dynamo=True): torch.export, then onnxscript"
# The traced example: batch 2, since torch.export fixes a dimension whose example is 1; height and width
# differ, so no guard ties them; the check's sizes (check.CHECK_SHAPES) differ from it.
TRACE_SHAPE = (2, 3, 64, 96)


def run_recipe(model_id: str) -> Path | None:
    """The run's recipe.yaml when `model_id` is a run directory that has one."""
    path = Path(model_id) / run_dir.RECIPE
    return path if path.is_file() else None


def default_output_dir(model_id: str) -> Path:
    """`MODEL/onnx` for a directory.

    Raises:
        ExportError: `model_id` is a Hub id, which has no folder of its own to write into.
        CheckpointError: `model_id` is neither a directory nor a Hub id.
    """
    if Path(model_id).is_dir():
        return Path(model_id) / run_dir.ONNX_DIR
    check_hub_id(model_id)
    raise ExportError(f"{model_id}: a Hub id has no folder to export into: pass --output_dir")


def deploy_config(model: torch.nn.Module) -> PretrainedConfig:
    """The config.json of the ONNX folder: transformers' SegformerConfig for a MixTransformer (the same function
    and class names, readable without segtune), the model's own config otherwise; segtune's palette kept."""
    config = model.config
    if not hasattr(config, "to_segformer_config"):
        return copy.deepcopy(config)
    deployed = config.to_segformer_config()
    deployed.architectures = ["SegformerForSemanticSegmentation"]
    if getattr(config, "palette", None) is not None:
        deployed.palette = config.palette
    return deployed


def _trace(graph: ExportedGraph, options: GraphOptions, opset: int) -> Any:
    if options.preprocess:
        sample = torch.randint(0, 256, TRACE_SHAPE, dtype=torch.uint8)
    else:
        sample = torch.randn(TRACE_SHAPE, dtype=torch.float16 if options.half else torch.float32)
    dims = {0: torch.export.Dim("batch"), 2: torch.export.Dim("height"), 3: torch.export.Dim("width")}
    return torch.onnx.export(
        graph,
        (sample,),
        dynamo=True,
        dynamic_shapes={INPUT_NAME: dims},
        input_names=[INPUT_NAME],
        output_names=[options.output_name],
        opset_version=opset,
        verbose=False,
    )


def _tensor_spec(value: Any) -> dict:
    import onnx

    tensor = value.type.tensor_type
    shape = [dim.dim_param or dim.dim_value for dim in tensor.shape.dim]
    return {"name": value.name, "dtype": onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name, "shape": shape}


def describe(path: Path, model: torch.nn.Module, processor: Any, options: GraphOptions, source: str) -> dict:
    """What export.json says: inputs and outputs, precision, opset, options, the exporter and the versions."""
    import onnx
    import onnxscript
    import transformers

    from .. import __version__

    graph = onnx.load(str(path), load_external_data=False)
    description = {
        "format": "onnx",
        "file": path.name,
        "source": source,
        "source_model_type": model.config.model_type,
        "inputs": [_tensor_spec(value) for value in graph.graph.input],
        "outputs": [_tensor_spec(value) for value in graph.graph.output],
        "precision": options.precision,
        "opset": next(o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")),
        "options": {"half": options.half, "preprocess": options.preprocess, "labels": options.labels},
        "attn_implementation": getattr(model.config, "_attn_implementation", None),
        "exporter": EXPORTER,
        "versions": {
            "torch": torch.__version__,
            "onnx": onnx.__version__,
            "onnxscript": onnxscript.__version__,
            "transformers": transformers.__version__,
            "segtune": __version__,
        },
    }
    if options.preprocess:
        # Resizing stays outside: the graph predicts at the size it is given.
        resize = processor.size if processor.do_resize else None
        description["preprocess"] = {"in_graph": "rescale and normalisation", "resize_before": resize}
    return description


def write_export(
    model: torch.nn.Module, processor: Any, folder: Path, options: GraphOptions, opset: int, source: str
) -> dict:
    """Write model.onnx, config.json and the image processor into `folder`; return export.json's description."""
    exported = copy.deepcopy(model).half() if options.half else model
    graph = ExportedGraph(exported, options, processor).eval()
    logger.info("exporting %s to ONNX (opset %d, %s) with %s", source, opset, options.precision, EXPORTER)
    _trace(graph, options, opset).save(str(folder / MODEL_FILE))
    deploy_config(model).save_pretrained(folder)
    processor.save_pretrained(folder)
    description = describe(folder / MODEL_FILE, model, processor, options, source)
    _check_written_opset(opset, description["opset"])
    return description


def _check_opset(opset: int) -> None:
    import onnx

    newest = onnx.defs.onnx_opset_version()
    if not 1 <= opset <= newest:
        raise ExportError(
            f"--opset: expected 1 to {newest} (the newest opset of onnx {onnx.__version__}), found {opset}"
        )


def _check_written_opset(requested: int, written: int) -> None:
    # Below 18, PyTorch exports at 18 and converts down with onnx's version converter; where an operator has no
    # older form (LayerNormalization before 17), it logs the failure and keeps 18.
    if written != requested:
        raise ExportError(
            f"--opset {requested}: PyTorch's exporter wrote opset {written}, and onnx's version converter could not "
            f"convert the graph to {requested}; use --opset 17 or newer"
        )


def _move_into(folder: Path, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for path in folder.iterdir():
        os.replace(path, target / path.name)


def export_onnx(
    model_id: str,
    output_dir: str | Path | None = None,
    *,
    half: bool = False,
    preprocess: bool = False,
    labels: bool = False,
    opset: int = DEFAULT_OPSET,
    check: bool | None = None,
    recipe: Recipe | None = None,
) -> dict:
    """Export `model_id` (a run directory, a checkpoint directory or a Hub id, segtune's or transformers')
    to ONNX with a dynamic batch, height and width; check it; write it to `output_dir` (default `MODEL/onnx`).

    `half`: fp16. `preprocess`: uint8 images in, normalised in the graph. `labels`: class maps out (uint8
    while the classes fit, else int64). `check`: None (default) runs the parity check, and the mIoU check
    when there is a recipe (`recipe`, else the run's recipe.yaml) whose evaluation split loads; True
    requires both (the mIoU of graphs without `preprocess` and `labels`, which the evaluation can run); False
    skips them. Returns the description also written to export.json, with the checks.

    Raises:
        ExportError: no output folder for a Hub id, a bad opset, the onnx packages missing, or a failed
            check (nothing is written then).
        CheckpointError: the model cannot be loaded.
        DatasetError: with `check=True`, the evaluation split cannot be loaded.
    """
    target = Path(output_dir) if output_dir is not None else default_output_dir(model_id)
    for package in ("onnx", "onnxscript") + (("onnxruntime",) if check is not False else ()):
        import_optional(package, "segtune export" if package != "onnxruntime" else "segtune export's check")
    _check_opset(opset)
    if recipe is None and check is not False and (recipe_file := run_recipe(model_id)) is not None:
        recipe = load_recipe(recipe_file)
    if check is True and recipe is None and not (preprocess or labels):
        raise ExportError(f"--check: no recipe to evaluate {model_id} with (not a run directory): pass --recipe")
    model, processor = load_for_inference(model_id)
    options = GraphOptions(half=half, preprocess=preprocess, labels=labels)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{target.name}-staging-", dir=target.parent) as staging:
        folder = Path(staging)
        description = write_export(model, processor, folder, options, opset, str(model_id))
        if check is not False:
            try:
                description["check"] = check_export(model_id, model, processor, folder, options, recipe, check is True)
            except ExportError as error:
                raise ExportError(f"{error}; nothing was written to {target}") from None
        run_dir.write_json(folder / DESCRIPTION_FILE, description)
        _move_into(folder, target)
    return description
