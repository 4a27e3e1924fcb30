"""Sources: files on disk or a Hub dataset -> a DatasetDict with lazily decoded `image` and `label` columns.

| data.source | where from                                                | module        |
|-------------|-----------------------------------------------------------|---------------|
| synthetic   | generated scenes, no download (the default)               | synthetic.py  |
| folder      | images/ + masks/ paired by file name                      | folder.py     |
| cityscapes  | leftImg8bit/ + gtFine/, label ids -> 19 train ids         | cityscapes.py |
| hub         | `datasets.load_dataset` / `load_from_disk` / parquet      | hub.py        |
| ade20k      | the hub path with ADE20K's names and reduce_labels        | ade20k.py     |
"""

from __future__ import annotations

from ...recipe import Recipe
from .ade20k import load_ade20k
from .base import FEATURES, IMAGE, LABEL, Source
from .cityscapes import load_cityscapes
from .folder import load_folder
from .hub import load_hub
from .synthetic import load_synthetic


def load_source(recipe: Recipe) -> Source:
    """The samples `recipe.data` points to, before any label mapping or transform.

    Raises:
        DatasetError: whatever the source finds wrong (missing folder, split, column, unpaired files...).
    """
    data, seed = recipe.data, recipe.train.seed
    if data.source == "synthetic":
        return load_synthetic(data.synthetic, data.train_split, data.eval_split)
    if data.source == "folder":
        return load_folder(data, seed)
    if data.source == "cityscapes":
        return load_cityscapes(data)
    if data.source == "ade20k":
        return load_ade20k(data, seed)
    return load_hub(data, seed)


__all__ = ["FEATURES", "IMAGE", "LABEL", "Source", "load_source"]
