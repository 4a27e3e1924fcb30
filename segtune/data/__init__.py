"""Data: sources, the label contract, transforms and loaders; everything between files and batches.

    from segtune.data import build_datasets, make_loader

    data = build_datasets(recipe)                       # sources -> LabelSpec -> torch datasets
    train_loader = make_loader(data.train, batch_size, num_workers, sampler=key_sampler)
    eval_loader = make_loader(data.eval, recipe.eval.batch_size, num_workers)
    data.labels.num_labels, data.labels.id2label, data.labels.ignore_index   # for model, loss, metric
    data.processor.save_pretrained(output_dir)          # inference preprocessing, saved with the model
    print(data.skipped.summary())                       # under data.skip_invalid

| module        | concern                                                                 |
|---------------|-------------------------------------------------------------------------|
| sources/      | files or a Hub dataset -> DatasetDict of lazily decoded image / label   |
| labels.py     | LabelSpec: names, palette, ignore index, reduce_labels / id mapping once |
| decode.py     | reading one stored image or mask, errors naming the file                |
| processing.py | the SegformerImageProcessor (normalisation, eval resize)                |
| transforms.py | mmseg training augmentation on torchvision v2, keyed by (seed, key)     |
| build.py      | recipe -> SegmentationData (train / eval datasets, skip counter)        |
| loaders.py    | collation and DataLoaders                                               |
| check.py      | `python -m segtune.data check`: histogram and problems                  |
"""

from .build import EvalDataset, SegmentationData, SkipCounter, TrainDataset, build_datasets, label_spec
from .check import CheckReport, check_dataset
from .labels import LabelSpec, default_palette
from .loaders import eval_collate, make_loader, train_collate
from .processing import build_image_processor
from .sources import Source, load_source
from .transforms import TrainTransform, item_seed

__all__ = [
    "CheckReport",
    "EvalDataset",
    "LabelSpec",
    "SegmentationData",
    "SkipCounter",
    "Source",
    "TrainDataset",
    "TrainTransform",
    "build_datasets",
    "build_image_processor",
    "check_dataset",
    "default_palette",
    "eval_collate",
    "item_seed",
    "label_spec",
    "load_source",
    "make_loader",
    "train_collate",
]
