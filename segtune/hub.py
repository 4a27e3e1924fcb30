"""Push a finished run to the Hugging Face Hub with a model card; everything stays local if it fails.

What goes up: the safetensors weights, `config.json` (for `mix_transformer` models with `auto_map`
and the remote-code files), the image processor, `recipe.yaml`, `metrics.json`, the per-class table,
the prediction grid, a model card `README.md`, and the ONNX export in `onnx/` if `segtune export` wrote
one. `model_format="segformer"` uploads a stock transformers `SegformerForSemanticSegmentation` instead
(`to_segformer()`): no remote code, and the Hub's inference widget works. `adapter=True` uploads a LoRA
run's adapter alone, with a card naming its base model (`hub_adapter.py`).

The token is whatever huggingface_hub finds (`HF_TOKEN`, or `hf auth login`); segtune never prints,
logs or writes it.
"""

from __future__ import annotations

import functools
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData, get_token
from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, RepositoryNotFoundError
from transformers.utils import CONFIG_NAME

from . import run_dir
from .errors import HubError
from .hub_adapter import adapter_card_text, adapter_dir, stage_adapter
from .metrics import per_class_table
from .recipe import ARCHS, DATA_SOURCES, Recipe, recipe_from_dict

# What a push uploads from a run directory: the model files at its top level, the run's results and its ONNX
# export (`segtune export` writes onnx/); never checkpoints or tracker logs (other subfolders, `not_uploaded`)
# or the record of a failed push.
UPLOADED = ["*.safetensors", "*.json", "*.py", *run_dir.RESULT_FILES, f"{run_dir.ONNX_DIR}/*"]
NVIDIA_LICENSE_LINK = "https://github.com/NVlabs/SegFormer/blob/master/LICENSE"


def not_uploaded(folder: Path) -> list[str]:
    """What a push leaves out of `folder`: every subfolder but onnx/, and the record of a failed push."""
    subfolders = [f"{p.name}/*" for p in sorted(folder.iterdir()) if p.is_dir() and p.name != run_dir.ONNX_DIR]
    return [*subfolders, run_dir.PUSH_PENDING]


def _read_run(output_dir: Path) -> tuple[Recipe, dict, dict]:
    """The run's recipe, final metrics and model config.

    Raises:
        HubError: the directory is not a finished segtune run (names the missing file).
    """
    needed = [output_dir / name for name in (CONFIG_NAME, run_dir.RECIPE, run_dir.METRICS)]
    missing = [p.name for p in needed if not p.is_file()]
    if missing:
        raise HubError(f"{output_dir}: not a finished segtune run; missing {missing} (train it to the end first)")
    recipe_file = output_dir / run_dir.RECIPE
    recipe = recipe_from_dict(yaml.safe_load(recipe_file.read_text()), str(recipe_file))
    return (
        recipe,
        json.loads((output_dir / run_dir.METRICS).read_text()),
        json.loads((output_dir / CONFIG_NAME).read_text()),
    )


# The Hub ids model cards (NVIDIA's among them) give the paper's datasets when they were read from local folders.
_CARD_DATASETS = {"ade20k": "scene_parse_150", "cityscapes": "cityscapes", "coco_stuff": "coco_stuff164k"}


def _dataset_id(recipe: Recipe) -> str | None:
    """The dataset's Hub id for the card: the Hub dataset trained on, else the usual id of a paper dataset."""
    data = recipe.data
    local = data.path is None or Path(data.path).exists() or data.path == DATA_SOURCES[data.source].default_path
    if data.source == "hub" or (data.source == "ade20k" and not local):  # ADE20K may be a Parquet copy on the Hub
        return data.path
    return _CARD_DATASETS.get(data.source)


def _from_nvidia(recipe: Recipe) -> bool:
    return recipe.model.init == "pretrained" and recipe.model.checkpoint.startswith("nvidia/")


def card_data(repo_id: str, recipe: Recipe, metrics: dict, adapter: bool = False) -> ModelCardData:
    """Model card metadata: library, task, tags, dataset, base model, licence and model-index results; for a
    LoRA `adapter` alone, peft's library name and the base model it adapts."""
    dataset = _dataset_id(recipe) or f"segtune-{recipe.data.source}"
    results = [
        EvalResult(
            task_type="image-segmentation",
            task_name="Semantic Segmentation",
            dataset_type=dataset,
            dataset_name=dataset,
            dataset_split=recipe.data.eval_split,
            metric_type=key,
            metric_name=name,
            metric_value=round(float(metrics[key]), 4),
        )
        for key, name in (("mean_iou", "mIoU"), ("mean_accuracy", "mAcc"), ("overall_accuracy", "aAcc"))
    ]
    nvidia = _from_nvidia(recipe)
    return ModelCardData(
        library_name="peft" if adapter else "transformers",
        pipeline_tag="image-segmentation",
        license="other" if nvidia else "apache-2.0",
        license_name="nvidia-source-code-license" if nvidia else None,
        license_link=NVIDIA_LICENSE_LINK if nvidia else None,
        tags=["segtune", "segformer", recipe.model.arch, "semantic-segmentation", "vision"]
        + (["lora", "peft"] if adapter else []),
        datasets=[dataset] if _dataset_id(recipe) else None,
        base_model=recipe.model.checkpoint if recipe.model.init == "pretrained" else None,
        base_model_relation="adapter" if adapter else None,
        model_name=repo_id.split("/")[-1],
        eval_results=results,
    )


def _class_table(metrics: dict) -> str:
    names = dict(enumerate(metrics.get("per_category_iou_by_name", {})))
    return per_class_table(metrics, names, markdown=True)


def _licence(recipe: Recipe) -> str:
    return (
        f"This model was fine-tuned from `{recipe.model.checkpoint}`, NVIDIA's SegFormer weights, which carry "
        f"NVIDIA's non-commercial [Source Code License]({NVIDIA_LICENSE_LINK}); this model inherits it."
        if _from_nvidia(recipe)
        else "Apache-2.0."
    )


def card_text(repo_id: str, recipe: Recipe, metrics: dict, model_format: str) -> str:
    """The model card body: results, per-class IoU, loading with and without segtune, licence."""
    remote = model_format == "mix_transformer"
    load_kwargs = ", trust_remote_code=True" if remote else ""
    licence = _licence(recipe)
    return f"""# {repo_id.split("/")[-1]}

SegFormer ({recipe.model.variant}, `{recipe.model.arch}`) fine-tuned with [segtune](https://github.com/segtune/segtune)
recipe `{recipe.name}` for {metrics.get("step", recipe.train.max_steps)} steps on `{_dataset_id(recipe) or recipe.data.source}`.

**mIoU {metrics["mean_iou"]:.4f}** · mAcc {metrics["mean_accuracy"]:.4f} · aAcc {metrics["overall_accuracy"]:.4f}
(split `{recipe.data.eval_split}`, {recipe.eval.mode} inference, scored at native label resolution).

{_class_table(metrics)}

## How to use

With segtune installed (`pip install segtune`):

```python
import segtune
masks = segtune.segment("{repo_id}", ["image.jpg"])
```

With plain transformers{" (the model code comes with the checkpoint)" if remote else ""}:

```python
from transformers import AutoImageProcessor, AutoModelForSemanticSegmentation, pipeline

processor = AutoImageProcessor.from_pretrained("{repo_id}")
model = AutoModelForSemanticSegmentation.from_pretrained("{repo_id}"{load_kwargs})
segmenter = pipeline("image-segmentation", model="{repo_id}"{load_kwargs})
```

The training recipe is `{run_dir.RECIPE}`; the final evaluation is `{run_dir.METRICS}`; `{run_dir.GRID}` shows
image, ground truth and prediction for validation samples.

## Licence

{licence}
"""


def build_card(repo_id: str, recipe: Recipe, metrics: dict, model_format: str, adapter: bool = False) -> ModelCard:
    """A `huggingface_hub.ModelCard`: the `ModelCardData` metadata, then `card_text` (`adapter_card_text` for an
    `adapter` alone).

    Assembled as `ModelCard.from_template` assembles it, without its Jinja pass, which would read any `{{` in
    the text (a class name, a recipe value) as template syntax.
    """
    metadata = card_data(repo_id, recipe, metrics, adapter).to_yaml()
    text = (
        adapter_card_text(repo_id, recipe, metrics, _class_table(metrics), _licence(recipe))
        if adapter
        else card_text(repo_id, recipe, metrics, model_format)
    )
    return ModelCard(f"---\n{metadata}\n---\n\n{text}")


def save_stock_model(output_dir: Path, folder: Path) -> None:
    """Write the run's model as a stock `SegformerForSemanticSegmentation` into `folder`, with its image
    processor and the run's result files."""
    from .models.loading import load_for_inference

    model, processor = load_for_inference(str(output_dir))
    stock = model.to_segformer() if hasattr(model, "to_segformer") else model
    stock.save_pretrained(folder)
    processor.save_pretrained(folder)
    for name in run_dir.RESULT_FILES:
        if (output_dir / name).is_file():
            shutil.copy2(output_dir / name, folder / name)
    if (output_dir / run_dir.ONNX_DIR).is_dir():
        shutil.copytree(output_dir / run_dir.ONNX_DIR, folder / run_dir.ONNX_DIR)


def _check_login(api: HfApi) -> None:
    if get_token() is None:
        raise HubError("no Hugging Face token: run `hf auth login` or set HF_TOKEN, then push again")
    try:
        api.whoami()
    except HfHubHTTPError as error:
        raise HubError(
            f"the Hugging Face token was refused ({error.response.status_code}): run `hf auth login` again"
        ) from None


def _check_related(api: HfApi, repo_id: str, config: dict, overwrite: bool, adapter: bool = False) -> None:
    """Refuse to push over a repo holding another model (other model type or labels), or an `adapter` into a repo
    holding a whole model, unless overwriting.

    Raises:
        HubError: naming what the repo holds and what would be pushed.
    """
    if overwrite:
        return
    try:
        existing = json.loads(Path(api.hf_hub_download(repo_id, CONFIG_NAME)).read_text())
    except (RepositoryNotFoundError, EntryNotFoundError):
        return
    if adapter:
        raise HubError(
            f"{repo_id} already holds a whole model ({CONFIG_NAME}); an adapter goes in a repo of its own: "
            "pass another --repo_id, or --overwrite to add it there anyway"
        )
    theirs = (existing.get("model_type"), existing.get("id2label"))
    ours = (config.get("model_type"), config.get("id2label"))
    if theirs != ours and not (existing.get("model_type") in ARCHS and existing.get("id2label") == ours[1]):
        raise HubError(
            f"{repo_id} already holds another model (model_type {theirs[0]!r} with {len(theirs[1] or {})} labels; "
            f"pushing {ours[0]!r} with {len(ours[1] or {})} labels): pass --overwrite to replace it"
        )


def push(
    output_dir: str | Path,
    repo_id: str | None = None,
    *,
    private: bool | None = None,
    model_format: str | None = None,
    adapter: bool | None = None,
    overwrite: bool = False,
    commit_message: str | None = None,
) -> str:
    """Upload a finished run to `repo_id`; return the commit URL.

    `repo_id`, `private`, `model_format` (`hub.format`: mix_transformer or segformer) and `adapter` (`hub.adapter`:
    a LoRA run's adapter alone, instead of its merged model) default to the run's `hub.*` recipe settings, or to a
    previous failed push's. The model card is also saved in the run directory (README.md; `adapter/README.md` for
    the adapter's). A failure keeps everything local, records the attempt, and raises.

    Raises:
        HubError: not a finished run, no token, an unrelated model in the repo, no pushable adapter, or the upload
            failed.
    """
    output_dir = Path(output_dir)
    recipe, metrics, config = _read_run(output_dir)
    pending_file = output_dir / run_dir.PUSH_PENDING
    pending = json.loads(pending_file.read_text()) if pending_file.is_file() else {}
    repo_id = repo_id or pending.get("repo_id") or recipe.hub.repo_id
    if not repo_id:
        raise HubError(f"{output_dir}: no repo id: pass --repo-id user/name or set hub.repo_id in the recipe")
    model_format = model_format or pending.get("format") or recipe.hub.format
    if model_format not in ARCHS:
        raise HubError(f"--format: expected one of {list(ARCHS)}, found {model_format!r}")
    private = recipe.hub.private if private is None else private
    adapter = next(a for a in (adapter, pending.get("adapter"), recipe.hub.adapter) if a is not None)
    if adapter:
        adapter_dir(output_dir, recipe)  # refused before any request
    api = HfApi()
    _check_login(api)
    _check_related(api, repo_id, config, overwrite, adapter)
    try:
        url = _upload(api, output_dir, repo_id, recipe, metrics, model_format, adapter, private, commit_message)
    except Exception as error:  # HTTP errors, refused connections, timeouts: whatever stopped the upload
        _record_pending(output_dir, repo_id, model_format, adapter, error)
        raise HubError(
            f"push to {repo_id} failed ({type(error).__name__}: {error}); everything is kept in "
            f"{output_dir}: run `segtune push {output_dir}` to retry"
        ) from error
    pending_file.unlink(missing_ok=True)
    return url


def _upload(
    api: HfApi,
    output_dir: Path,
    repo_id: str,
    recipe: Recipe,
    metrics: dict,
    model_format: str,
    adapter: bool,
    private: bool,
    commit_message: str | None,
) -> str:
    api.create_repo(repo_id, private=private, exist_ok=True)
    # The card stays with the run (as transformers' Trainer keeps its README.md in the output directory).
    card = build_card(repo_id, recipe, metrics, model_format, adapter)
    card.save(output_dir / (f"{run_dir.ADAPTER}/{run_dir.CARD}" if adapter else run_dir.CARD))
    upload = functools.partial(
        api.upload_folder,
        repo_id=repo_id,
        allow_patterns=UPLOADED,
        commit_message=commit_message or f"segtune: {recipe.name}, mIoU {metrics['mean_iou']:.4f}",
    )
    if model_format == "mix_transformer" and not adapter:
        return upload(folder_path=output_dir, ignore_patterns=not_uploaded(output_dir)).commit_url
    with tempfile.TemporaryDirectory() as folder:  # the stock model or the adapter: other files than the run's own
        if adapter:
            stage_adapter(output_dir, recipe, Path(folder))
            card.save(Path(folder) / run_dir.CARD)
        else:
            save_stock_model(output_dir, Path(folder))
        return upload(folder_path=folder, ignore_patterns=not_uploaded(Path(folder))).commit_url


def _record_pending(output_dir: Path, repo_id: str, model_format: str, adapter: bool, error: Exception) -> None:
    record: dict[str, Any] = {
        "repo_id": repo_id,
        "format": model_format,
        "adapter": adapter,
        "failed_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "error": type(error).__name__,
    }
    (output_dir / run_dir.PUSH_PENDING).write_text(json.dumps(record, indent=2))
