"""Sources: files on disk or a Hub dataset -> a DatasetDict with lazily decoded `image` and `label` columns.

| data.source | where from                                                         | module        |
|-------------|--------------------------------------------------------------------|---------------|
| synthetic   | generated scenes, no download (the default)                        | synthetic.py  |
| folder      | images/ + masks/ paired by file name                               | folder.py     |
| cityscapes  | leftImg8bit/ + gtFine/, label ids -> 19 train ids                  | cityscapes.py |
| hub         | `datasets.load_dataset` / `load_from_disk` / parquet               | hub.py        |
| ade20k      | the official ADEChallengeData2016 folder (or a Parquet copy)       | ade20k.py     |
| coco_stuff  | COCO-Stuff-164k: images/ + stuffthingmaps or *_labelTrainIds masks | coco_stuff.py |
| coco        | COCO JSON polygons / RLE (CVAT, Label Studio, Roboflow), rasterised | coco.py       |
| labelme     | images with LabelMe .json beside them, rasterised                  | labelme.py    |
| yolo        | Ultralytics segmentation: data.yaml + labels/**.txt, rasterised     | yolo.py       |
| voc         | Pascal VOC 2012: ImageSets/Segmentation lists, palette PNG masks   | voc.py        |

`SOURCES` maps each `data.source` to its loader; the names, and which sources need a `data.path` and
read a default one, are the recipe's (`segtune.recipe.DATA_SOURCES`), and the layering tests keep the two
lists equal. `load_source` dispatches through it and is the one place a default path is applied. This
module imports nothing heavy (no datasets, torch, numpy, PIL); a source's module is imported when the
source is used.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import TYPE_CHECKING

from ...lazy import lazy_exports
from ...recipe import DATA_SOURCES

if TYPE_CHECKING:
    from ...recipe import Recipe
    from .base import FEATURES, IMAGE, LABEL, Source


# data.source -> "module:function" in segtune.data.sources; the function takes `(data: DataConfig, seed: int)`,
# `data.path` already set (to the source's default path when the recipe gives none), and returns a Source.
SOURCES: dict[str, str] = {
    "synthetic": "synthetic:load_synthetic",
    "folder": "folder:load_folder",
    "cityscapes": "cityscapes:load_cityscapes",
    "hub": "hub:load_hub",
    "ade20k": "ade20k:load_ade20k",
    "coco_stuff": "coco_stuff:load_coco_stuff",
    "coco": "coco:load_coco",
    "labelme": "labelme:load_labelme",
    "yolo": "yolo:load_yolo",
    "voc": "voc:load_voc",
}


def load_source(recipe: Recipe) -> Source:
    """The samples `recipe.data` points to, before any label mapping or transform.

    `data.path` falls back to the source's default path (`segtune.recipe.DATA_SOURCES`).
    A source without an eval split gets one here: `data.val_ratio` of its samples held out (`held_out.py`).

    Raises:
        KeyError: `data.source` is not in SOURCES (a validated recipe never has one).
        DatasetError: whatever the source finds wrong (missing folder, split, column, unpaired files...).
    """
    data = recipe.data
    default_path = DATA_SOURCES[data.source].default_path
    if data.path is None and default_path is not None:
        data = dataclasses.replace(data, path=default_path)
    module, function = SOURCES[data.source].split(":")
    source = getattr(importlib.import_module(f"{__name__}.{module}"), function)(data, recipe.train.seed)
    if source.pool is not None:
        # Here, not in each loader: a loader's caller may still change the label contract (ADE20K through hub).
        from ..held_out import hold_out

        source = hold_out(source, data, recipe.train.seed)
    return source


# The shared names of base.py, imported on first use so that importing the registry stays light.
_EXPORTS = {"FEATURES": ".base", "IMAGE": ".base", "LABEL": ".base", "Source": ".base"}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = ["FEATURES", "IMAGE", "LABEL", "SOURCES", "Source", "load_source"]
