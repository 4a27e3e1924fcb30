"""A `datasets` dataset: a Hub id, a `save_to_disk` folder, or local parquet files, all one code path.

    data.source: hub
    data.path: segments/sidewalk-semantic      # or ./my_dataset (save_to_disk), ./parquet_dir, ./train.parquet
    data.image_column: pixel_values            # renamed to `image`
    data.label_column: label                   # must be an Image feature; renamed to `label`

The recipe's split names pick the splits; a missing eval split is held out of train by `load_source`
(`data.val_ratio`, `held_out.py`). Class names come from the recipe, else from `id2label.json` in the dataset (a local
folder, or the dataset's Hub repo).
"""

from __future__ import annotations

from pathlib import Path

import datasets

from ...errors import DatasetError
from ...recipe import DataConfig
from ..labels import read_id2label
from .base import IMAGE, LABEL, Source, require_nonempty
from .scripts import refuse_script_dataset, script_error_from

# Column names transformers' example script renames: (image, label) fallbacks when the recipe's are absent.
_FALLBACKS = {IMAGE: ("image", "pixel_values", "img"), LABEL: ("label", "annotation", "semantic_segmentation", "mask")}


def load_hub(data: DataConfig, seed: int, path: str | None = None, find_id2label: bool = True) -> Source:
    """The train and eval splits of a `datasets` dataset, with `image` and `label` Image columns.

    `find_id2label=False` skips looking for an id2label.json (a source that knows its names).

    Raises:
        DatasetError: the dataset cannot be loaded or is a loading script (datasets >= 4 runs none), a split
            or column is missing, a column is not an Image feature, or a split is empty.
    """
    path = path or data.path or ""
    splits = _load(path, data.config_name)
    splits = _pick_splits(splits, data, path)
    image_column = _column(splits[data.train_split], data.image_column, IMAGE, path)
    label_column = _column(splits[data.train_split], data.label_column, LABEL, path)
    out = {}
    for split, dataset in splits.items():
        dataset = dataset.select_columns([image_column, label_column])
        if (image_column, label_column) != (IMAGE, LABEL):
            # through a temporary name, so swapped names (image <-> label) cannot collide
            dataset = dataset.rename_columns({image_column: "__image", label_column: "__label"})
            dataset = dataset.rename_columns({"__image": IMAGE, "__label": LABEL})
        require_nonempty(dataset, split, path)
        out[split] = dataset
    pool = out.pop(data.train_split) if data.eval_split not in out else None  # load_source holds out val_ratio
    id2label = _id2label(path) if find_id2label and not data.id2label else None
    return Source(splits=datasets.DatasetDict(out), name=path, id2label=id2label, pool=pool)


def _load(path: str, config_name: str | None) -> datasets.DatasetDict:
    local = Path(path)
    try:
        if (local / "dataset_dict.json").is_file() or (local / "state.json").is_file():
            loaded = datasets.load_from_disk(str(local))
        elif local.is_file() and local.suffix == ".parquet":
            loaded = datasets.load_dataset("parquet", data_files={"train": str(local)})
        else:
            refuse_script_dataset(path)  # before datasets, which would reach the Hub to find out
            loaded = datasets.load_dataset(path, config_name)
    except DatasetError:
        raise
    except Exception as error:  # datasets raises many types (not found, offline, bad config, script, ...)
        raise script_error_from(error, path) or DatasetError(
            f"data.path {path!r}: cannot load the dataset: {type(error).__name__}: {error}"
        ) from None
    if isinstance(loaded, datasets.Dataset):
        loaded = datasets.DatasetDict({"train": loaded})
    if not isinstance(loaded, datasets.DatasetDict):
        raise DatasetError(
            f"data.path {path!r}: expected a map-style dataset with splits, found {type(loaded).__name__}"
        )
    return loaded


def _pick_splits(splits: datasets.DatasetDict, data: DataConfig, path: str) -> dict[str, datasets.Dataset]:
    if data.train_split not in splits:
        raise DatasetError(f"data.train_split {data.train_split!r}: no such split in {path!r}; it has {list(splits)}")
    if data.eval_split in splits:
        return {data.train_split: splits[data.train_split], data.eval_split: splits[data.eval_split]}
    if data.val_ratio is None:
        raise DatasetError(
            f"data.eval_split {data.eval_split!r}: no such split in {path!r}; it has {list(splits)}. "
            "Name one of them, or set data.val_ratio to split the train split"
        )
    return {data.train_split: splits[data.train_split]}


def _column(dataset: datasets.Dataset, configured: str, role: str, path: str) -> str:
    """The column holding images or masks; must be an Image feature."""
    columns = dataset.column_names
    name = configured if configured in columns else None
    if name is None and configured == role:  # the recipe kept the default: accept the usual other names
        name = next((c for c in _FALLBACKS[role] if c in columns), None)
    if name is None:
        raise DatasetError(f"data.{role}_column {configured!r}: no such column in {path!r}; it has {columns}")
    feature = dataset.features[name]
    if not isinstance(feature, datasets.Image):
        what = "segmentation mask" if role == LABEL else "image"
        raise DatasetError(
            f"{path!r}: {role} column {name!r} has feature type {feature!r}; expected an Image feature ({what})"
        )
    return name


def _id2label(path: str) -> dict[int, str] | None:
    """id2label.json of a local dataset folder, or of the dataset's Hub repo; None when there is none."""
    local = Path(path)
    if local.exists():
        candidate = local / "id2label.json" if local.is_dir() else local.parent / "id2label.json"
        return read_id2label(candidate) if candidate.is_file() else None
    try:
        from huggingface_hub import hf_hub_download

        downloaded = hf_hub_download(repo_id=path, filename="id2label.json", repo_type="dataset")
    except Exception:  # no such file, no such repo, offline: the caller asks the recipe for names instead
        return None
    return read_id2label(downloaded)
