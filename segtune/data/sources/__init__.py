"""Sources: files on disk or a Hub dataset -> a DatasetDict with lazily decoded `image` and `label` columns.

| data.source | where from                                                         | module        |
|-------------|--------------------------------------------------------------------|---------------|
| synthetic   | generated scenes, no download (the default)                        | synthetic.py  |
| folder      | images/ + masks/ paired by file name                               | folder.py     |
| cityscapes  | leftImg8bit/ + gtFine/, label ids -> 19 train ids                  | cityscapes.py |
| hub         | `datasets.load_dataset` / `load_from_disk` / parquet               | hub.py        |
| ade20k      | the official ADEChallengeData2016 folder (or a Parquet copy)       | ade20k.py     |
| coco_stuff  | COCO-Stuff-164k: images/ + stuffthingmaps or *_labelTrainIds masks | coco_stuff.py |

`SOURCES` maps each `data.source` to its loader; the names, and which sources need a `data.path` and
read a default one, are the recipe's (`segtune.recipe.DATA_SOURCES`), and the layering tests keep the two
lists equal. `load_source` dispatches through it and is the one place a default path is applied. This
module imports nothing heavy (no datasets, torch, numpy, PIL); a source's module is imported when the
source is used.
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ...lazy import lazy_exports
from ...recipe import DATA_SOURCES

if TYPE_CHECKING:
    from ...recipe import Recipe
    from .base import Source


@dataclass(frozen=True)
class SourceEntry:
    """How one `data.source` is loaded.

    Attributes:
        loader: "module:function" in segtune.data.sources; the function takes `(data: DataConfig, seed: int)`,
            `data.path` already set (to the source's default path when the recipe gives none), and returns
            a Source.
    """

    loader: str


SOURCES: dict[str, SourceEntry] = {
    "synthetic": SourceEntry("synthetic:load_synthetic"),
    "folder": SourceEntry("folder:load_folder"),
    "cityscapes": SourceEntry("cityscapes:load_cityscapes"),
    "hub": SourceEntry("hub:load_hub"),
    "ade20k": SourceEntry("ade20k:load_ade20k"),
    "coco_stuff": SourceEntry("coco_stuff:load_coco_stuff"),
}


def load_source(recipe: Recipe) -> Source:
    """The samples `recipe.data` points to, before any label mapping or transform.

    `data.path` falls back to the source's default path (`segtune.recipe.DATA_SOURCES`).

    Raises:
        KeyError: `data.source` is not in SOURCES (a validated recipe never has one).
        DatasetError: whatever the source finds wrong (missing folder, split, column, unpaired files...).
    """
    data = recipe.data
    default_path = DATA_SOURCES[data.source].default_path
    if data.path is None and default_path is not None:
        data = dataclasses.replace(data, path=default_path)
    return _loader(SOURCES[data.source])(data, recipe.train.seed)


def _loader(entry: SourceEntry) -> Any:
    module, function = entry.loader.split(":")
    return getattr(importlib.import_module(f"{__name__}.{module}"), function)


# The shared names of base.py, imported on first use so that importing the registry stays light.
__getattr__, __dir__ = lazy_exports(__name__, {name: ".base" for name in ("FEATURES", "IMAGE", "LABEL", "Source")})

__all__ = ["FEATURES", "IMAGE", "LABEL", "SOURCES", "Source", "SourceEntry", "load_source"]
