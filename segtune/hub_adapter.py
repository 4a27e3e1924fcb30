"""What an adapter-only push uploads (`segtune push --adapter`, `hub.adapter: true`), and its card.

A LoRA run keeps its adapter in `OUTPUT/adapter/` (peft's `save_pretrained` files and the image processor). The
push uploads those, the class names (`id2label.json`: the base model must be loaded with the same classes), the
run's results, and a card saying which base model the adapter needs and how to load it with peft.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from transformers.utils import CONFIG_NAME

from . import run_dir
from .errors import HubError
from .recipe import Recipe

ID2LABEL = "id2label.json"


def adapter_dir(output_dir: Path, recipe: Recipe) -> Path:
    """The run's adapter folder, checked to be pushable.

    Raises:
        HubError: the run was not trained with LoRA, its adapter is missing, or it started from random weights,
            which no one else can load the adapter onto.
    """
    folder = output_dir / run_dir.ADAPTER
    if recipe.model.peft.method != "lora" or not (folder / "adapter_config.json").is_file():
        raise HubError(
            f"{folder}: no LoRA adapter to push (expected adapter_config.json from a run with model.peft.method: "
            f"lora; this run's is {recipe.model.peft.method!r}): push the model without --adapter"
        )
    if recipe.model.init != "pretrained":
        raise HubError(
            f"{output_dir}: the adapter needs its base model's weights, and this run started from random weights "
            "(model.init: random): push the merged model, without --adapter"
        )
    return folder


def stage_adapter(output_dir: Path, recipe: Recipe, folder: Path) -> None:
    """Copy into `folder` the adapter's files, the class names and the run's result files (the card aside).

    Raises:
        HubError: as `adapter_dir`.
    """
    source = adapter_dir(output_dir, recipe)
    for path in source.iterdir():
        if path.is_file() and path.name != run_dir.CARD:  # the card of an earlier push: the push writes a new one
            shutil.copy2(path, folder / path.name)
    id2label = json.loads((output_dir / CONFIG_NAME).read_text())["id2label"]
    (folder / ID2LABEL).write_text(json.dumps(id2label, indent=2))
    for name in run_dir.RESULT_FILES:
        if name != run_dir.CARD and (output_dir / name).is_file():
            shutil.copy2(output_dir / name, folder / name)


def _base_class(recipe: Recipe) -> tuple[str, str]:
    """The import line and class the card loads the base model with."""
    if recipe.model.arch == "mix_transformer":
        return (
            'from segtune.models import MixTransformerForSemanticSegmentation  # pip install "segtune[peft]"',
            "MixTransformerForSemanticSegmentation",
        )
    return "from transformers import SegformerForSemanticSegmentation", "SegformerForSemanticSegmentation"


def adapter_card_text(repo_id: str, recipe: Recipe, metrics: dict, class_table: str, licence: str) -> str:
    """The adapter card's body: results, the base model it needs, how to load it with peft, and `licence`."""
    base, peft = recipe.model.checkpoint, recipe.model.peft
    import_line, base_class = _base_class(recipe)
    local = (
        " It was a local folder where the adapter was trained: publish that model too, and load it from its repo."
        if Path(base).exists()
        else ""
    )
    return f"""# {repo_id.split("/")[-1]}

A LoRA adapter (r={peft.r}, alpha={peft.alpha:g}) for SegFormer ({recipe.model.variant}, `{recipe.model.arch}`),
trained with [segtune](https://github.com/segtune/segtune) recipe `{recipe.name}` for
{metrics.get("step", recipe.train.max_steps)} steps; the decode head is trained in full and comes with the adapter.

**mIoU {metrics["mean_iou"]:.4f}** · mAcc {metrics["mean_accuracy"]:.4f} · aAcc {metrics["overall_accuracy"]:.4f}
(split `{recipe.data.eval_split}`, {recipe.eval.mode} inference, scored at native label resolution).

{class_table}

## Base model

This repository holds the adapter alone. It needs its base model, **`{base}`**, loaded with this adapter's
classes (`{ID2LABEL}`).{local}

## How to use

```python
import json

from huggingface_hub import hf_hub_download
from peft import PeftModel
from transformers import AutoImageProcessor
{import_line}

id2label = {{int(k): v for k, v in json.loads(open(hf_hub_download("{repo_id}", "{ID2LABEL}")).read()).items()}}
base = {base_class}.from_pretrained(
    "{base}", num_labels=len(id2label), id2label=id2label, ignore_mismatched_sizes=True
)
model = PeftModel.from_pretrained(base, "{repo_id}").merge_and_unload()  # or keep the PeftModel
processor = AutoImageProcessor.from_pretrained("{repo_id}")
```

`ignore_mismatched_sizes=True` lets the base model's own classifier give way to this adapter's decode head.
The training recipe is `{run_dir.RECIPE}`; the final evaluation is `{run_dir.METRICS}`.

## Licence

{licence}
"""
