"""What a finished run leaves in its output directory.

The final model (`save_pretrained`) with its image processor at the top, so `from_pretrained(OUTPUT)`
works; `metrics.json` (evaluate's key names, written last: it marks a finished run); a per-class IoU
table; a PNG grid of sample predictions. `recipe.yaml` and `checkpoints/` are written during training.
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..inference import InferenceConfig, predict_labels
from ..metrics import per_class_table
from ..visualize import prediction_grid

if TYPE_CHECKING:
    from .loop import Run

FINISHED_MARKER = "metrics.json"
TABLE_FILE = "per_class_iou.md"
GRID_FILE = "predictions.png"


def json_ready(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return [json_ready(v) for v in value.tolist()]
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (float, np.floating)):
        return None if math.isnan(value) else float(value)  # JSON has no NaN: a class never seen
    if isinstance(value, np.integer):
        return int(value)
    return value


def metrics_document(results: dict, run: Run) -> dict:
    """evaluate's keys, plus named per-class scores and where they were measured."""
    names = run.data.labels.id2label
    document = json_ready(results)
    document["per_category_iou_by_name"] = {names[i]: v for i, v in enumerate(document["per_category_iou"])}
    document.update(
        step=run.state.step,
        best_mean_iou=run.state.best_miou,
        best_step=run.state.best_step,
        eval_mode=run.recipe.eval.mode,
        num_eval_samples=len(run.data.eval),
    )
    return document


@torch.inference_mode()
def sample_grid(run: Run, model: torch.nn.Module):
    """Image | ground truth | prediction for the first `eval.num_visualizations` samples."""
    inference = InferenceConfig.from_eval(run.recipe.eval)
    device = next(model.parameters()).device
    samples = []
    for index in range(len(run.data.eval)):
        if len(samples) == run.recipe.eval.num_visualizations:
            break
        item = run.data.eval[index]
        if item is None:  # skipped under data.skip_invalid
            continue
        label = item["labels"]
        prediction = predict_labels(
            model.eval(), item["pixel_values"].unsqueeze(0).to(device), inference, tuple(label.shape)
        )
        samples.append((item["image"], label, prediction[0].cpu()))
    return prediction_grid(samples, run.data.labels.palette, run.data.labels.ignore_index) if samples else None


def write_outputs(run: Run, results: dict) -> None:
    """Save the final model and the run's results (main process); everyone waits for it."""
    accelerator = run.accelerator
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        out = run.output_dir
        model = accelerator.unwrap_model(run.model)
        model.config.palette = [list(colour) for colour in run.data.labels.palette]  # for segtune.predict
        model.save_pretrained(out)
        run.data.processor.save_pretrained(out)
        table = per_class_table(results, run.data.labels.id2label)
        (out / TABLE_FILE).write_text(per_class_table(results, run.data.labels.id2label, markdown=True) + "\n")
        grid = sample_grid(run, model)
        if grid is not None:
            grid.save(out / GRID_FILE)
        (out / FINISHED_MARKER).write_text(json.dumps(metrics_document(results, run), indent=2))
        accelerator.print(table)
        if run.data.skipped.count:
            accelerator.print(run.data.skipped.summary())
        accelerator.print(f"mIoU {float(results['mean_iou']):.4f}; model and results in {out}")
    accelerator.wait_for_everyone()
