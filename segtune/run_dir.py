"""The run directory: every file a run writes, named in this one module.

OUTPUT/
  config.json, model.safetensors, *.py     the final model (`from_pretrained(OUTPUT)` works)
  preprocessor_config.json                 its image processor
  recipe.yaml                              the recipe, written when training starts
  train_log.jsonl                          one JSON object per logging step and evaluation
  metrics.json                             the final evaluation, written last: marks a finished run
  per_class_iou.md                         the per-class IoU table
  predictions.png                          image | ground truth | prediction, for a few samples
  README.md                                the model card of the last push
  runs/                                    tracker logs (TensorBoard, ...)
  checkpoints/step-00001000/               Accelerate's state, run_state.json, recipe.yaml and manifest.json
  adapter/                                 after LoRA (model.peft): the adapter alone, for `segtune push --adapter`
  onnx/                                    `segtune export`: model.onnx, config.json, preprocessor_config.json,
                                           export.json (what is inside, and its check); pushed with the run
  .push_pending.json                       a failed push, to retry with `segtune push`
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

RECIPE = "recipe.yaml"
TRAIN_LOG = "train_log.jsonl"
METRICS = "metrics.json"
TABLE = "per_class_iou.md"
GRID = "predictions.png"
TRACKER_DIR = "runs"
CHECKPOINTS = "checkpoints"
CHECKPOINT_PREFIX = "step-"
RUN_STATE = "run_state.json"
MANIFEST = "manifest.json"  # in a checkpoint: every other file's size and checksum
PUSH_PENDING = ".push_pending.json"
ONNX_DIR = "onnx"
CARD = "README.md"
ADAPTER = "adapter"

# What a run adds beside the model files; uploaded with it, removed by `--overwrite`.
RESULT_FILES = (RECIPE, METRICS, TABLE, GRID, CARD)


def is_finished(output_dir: Path) -> bool:
    """True once a run has written its final evaluation."""
    return (Path(output_dir) / METRICS).is_file()


def checkpoint_root(output_dir: Path) -> Path:
    return Path(output_dir) / CHECKPOINTS


def checkpoint_name(step: int) -> str:
    """`step-00001000`: zero-padded, so names sort by step."""
    return f"{CHECKPOINT_PREFIX}{step:08d}"


def checkpoint_step(path: Path) -> int:
    return int(path.name[len(CHECKPOINT_PREFIX) :])


def json_ready(value: Any) -> Any:
    """`value` with NumPy arrays and scalars as plain lists and numbers, and NaN as None (JSON has no NaN)."""
    if isinstance(value, (np.ndarray, np.generic)):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, float) and math.isnan(value):
        return None  # a class never seen
    return value


def write_json(path: Path, document: Any) -> None:
    """Write `document` (results with NumPy values allowed) as indented JSON."""
    Path(path).write_text(json.dumps(json_ready(document), indent=2))


def honour_umask(files: Iterable[Path]) -> None:
    """Give `files` the permissions the umask allows (0644 under the usual 022).

    safetensors writes through a private temporary file and renames it, which leaves `model.safetensors`
    at 0600: other users of a shared machine could not read the model.
    """
    umask = os.umask(0)
    os.umask(umask)
    for path in files:
        if path.is_file():
            path.chmod(0o666 & ~umask)
