"""What a finished run leaves in its output directory (names in `run_dir`).

The final model (`save_pretrained`) with its image processor at the top, so `from_pretrained(OUTPUT)`
works (after LoRA, the merged model; the adapter alone is kept in `adapter/`, with the image processor); `metrics.json` (evaluate's key names, written last: it marks a finished run); a per-class IoU
table; a PNG grid of sample predictions. `recipe.yaml` and `checkpoints/` are written during training.
"""

from __future__ import annotations

import torch
from accelerate import Accelerator
from PIL import Image

from .. import run_dir
from ..data import SegmentationData
from ..inference import predict_labels
from ..metrics import per_class_table
from ..models.lora import is_lora, merge, save_adapter
from ..recipe import Recipe
from ..visualize import prediction_grid
from .checkpoints import RunState
from .stopping import early_stopping_record


def metrics_document(results: dict, data: SegmentationData, recipe: Recipe, state: RunState) -> dict:
    """evaluate's keys, plus named per-class scores and where they were measured."""
    document = run_dir.json_ready(results)
    names = data.labels.id2label
    document["per_category_iou_by_name"] = {names[i]: v for i, v in enumerate(document["per_category_iou"])}
    document.update(
        step=state.step,
        best_mean_iou=state.best_miou,
        best_step=state.best_step,
        eval_mode=recipe.eval.mode,
        num_eval_samples=len(data.eval),
    )
    document.update(early_stopping_record(recipe.train, state))  # after an early stop: the best step's model
    return document


@torch.inference_mode()
def sample_grid(model: torch.nn.Module, data: SegmentationData, recipe: Recipe) -> Image.Image | None:
    """Image | ground truth | prediction for the first `eval.num_visualizations` samples."""
    device = next(model.parameters()).device
    samples = []
    for index in range(len(data.eval)):
        if len(samples) == recipe.eval.num_visualizations:
            break
        item = data.eval[index]
        if item is None:  # skipped under data.skip_invalid
            continue
        label = item["labels"]
        pixel_values = item["pixel_values"].unsqueeze(0).to(device)
        prediction = predict_labels(model.eval(), pixel_values, recipe.eval, tuple(label.shape))
        samples.append((item["image"], label, prediction[0].cpu()))
    if not samples:
        return None
    return prediction_grid(samples, data.labels.palette, data.labels.ignore_index, id2label=data.labels.id2label)


def write_outputs(
    accelerator: Accelerator,
    model: torch.nn.Module,
    data: SegmentationData,
    recipe: Recipe,
    state: RunState,
    results: dict,
) -> None:
    """Save the final `model` (unwrapped) and the run's `results` into `recipe.output_dir` (main process);
    every process waits for it. A LoRA model is saved merged, and its adapter alone in `adapter/`: `model` is
    merged in place, spent for training."""
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        out = recipe.output_dir
        if is_lora(model):
            save_adapter(model, out / run_dir.ADAPTER)
            data.processor.save_pretrained(out / run_dir.ADAPTER)
            run_dir.honour_umask((out / run_dir.ADAPTER).glob("*.safetensors"))
            model = merge(model)
        model.config.palette = [list(colour) for colour in data.labels.palette]  # for segtune.segment's colours
        model.save_pretrained(out)
        data.processor.save_pretrained(out)
        run_dir.honour_umask(out.glob("*.safetensors"))
        (out / run_dir.TABLE).write_text(per_class_table(results, data.labels.id2label, markdown=True) + "\n")
        grid = sample_grid(model, data, recipe)
        if grid is not None:
            grid.save(out / run_dir.GRID)
        run_dir.write_json(out / run_dir.METRICS, metrics_document(results, data, recipe, state))
        accelerator.print(per_class_table(results, data.labels.id2label))
        if data.skipped.count:
            accelerator.print(data.skipped.summary())
        accelerator.print(f"mIoU {float(results['mean_iou']):.4f}; model and results in {out}")
    accelerator.wait_for_everyone()
