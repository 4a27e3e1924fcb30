"""Data: sources, the label contract, transforms and loaders; everything between files and batches.

    from segtune.data import build_datasets, make_loader

    data = build_datasets(recipe)                       # sources -> LabelSpec -> torch datasets
    train_loader = make_loader(data.train, batch_size, num_workers, sampler=key_sampler)
    pixel_values, labels = data.preprocess(batch)       # a training batch, on its device
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
| transforms.py | mmseg training geometry on torchvision v2 in the worker, keyed by (seed, key) |
| preprocess.py | the training batch on the device: photometric, normalisation, padding    |
| build.py      | recipe -> SegmentationData (train / eval datasets, skip counter)        |
| loaders.py    | collation and DataLoaders                                               |
| check.py      | `python -m segtune.data check`: histogram and problems                  |

The names below are imported on first use, so that importing the source registry
(`segtune.data.sources.SOURCES`) does not load torch.
"""

from ..lazy import lazy_exports

_EXPORTS = {
    "EvalDataset": ".build",
    "SegmentationData": ".build",
    "SkipCounter": ".build",
    "TrainDataset": ".build",
    "build_datasets": ".build",
    "label_spec": ".build",
    "CheckReport": ".check",
    "check_dataset": ".check",
    "LabelSpec": ".labels",
    "default_palette": ".labels",
    "eval_collate": ".loaders",
    "make_loader": ".loaders",
    "train_collate": ".loaders",
    "TrainBatchPreprocessor": ".preprocess",
    "build_image_processor": ".processing",
    "Source": ".sources.base",
    "load_source": ".sources",
    "TrainTransform": ".transforms",
    "item_seed": ".transforms",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = list(_EXPORTS)
