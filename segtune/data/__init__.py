"""Data: sources, the label contract, transforms and loaders; everything between files and batches.

    from segtune.data import build_datasets, make_loader

    data = build_datasets(recipe)                       # sources -> LabelSpec -> torch datasets
    train_loader = make_loader(data.train, batch_size, num_workers, sampler=key_sampler)
    data.preprocess.to(device)                          # once: its mean and std
    pixel_values, labels = data.preprocess(batch)       # a training batch, on its device
    eval_loader = make_loader(data.eval, recipe.eval.batch_size, num_workers)
    data.labels.num_labels, data.labels.id2label, data.labels.ignore_index   # for model, loss, metric
    data.processor.save_pretrained(output_dir)          # inference preprocessing, saved with the model
    print(data.skipped.summary())                       # under data.skip_invalid

| module                | concern                                                                |
|-----------------------|------------------------------------------------------------------------|
| sources/              | files or a Hub dataset -> DatasetDict of lazily decoded image / label  |
| labels.py             | LabelSpec: names, palette, ignore index, reduce_labels / id mapping / data.label_map once |
| colors.py             | colour masks: colour -> class id, decoded in the worker (`data.colors`) |
| decode.py             | reading one stored image or mask, errors naming the file               |
| image_processor.py    | the SegformerImageProcessor (evaluation and inference preprocessing)   |
| transforms.py         | mmseg training geometry on torchvision v2 in the worker, keyed by (seed, key) |
| batch_preprocessor.py | the training batch on the device: photometric, normalisation, padding  |
| build.py              | recipe -> SegmentationData (train / eval datasets, skip counter)       |
| loaders.py            | collation and DataLoaders                                              |
| carry.py              | a worker's DatasetError handed to the main process as data             |
| preflight.py          | the check before the first step (`data.check`)                         |
| mask_values.py        | what a split's masks hold (raw values, pixels, files), from a seeded sample |
| diagnosis.py          | the label-contract mistakes recognised in them, with the line that fixes each |
| check.py              | the dataset report of `segtune data check`: class table, diagnosis, problems |
| class_pixels.py       | a split's pixels per class, counted once per data fingerprint, cached  |

Only what a user of the library needs is exported here; the parts the loop assembles (datasets, collate
functions, the batch preprocessor, transforms) are imported from their modules. The names are imported
on first use (`segtune.lazy`), so that importing `segtune.data` loads no torch.
"""

from typing import TYPE_CHECKING

from ..lazy import lazy_exports

if TYPE_CHECKING:  # what IDEs and type checkers follow; at run time, `lazy_exports` imports on first use
    from .build import SegmentationData, build_datasets
    from .check import CheckReport, check_dataset
    from .image_processor import build_image_processor
    from .labels import LabelSpec
    from .loaders import make_loader
    from .sources import load_source
    from .sources.base import Source

_EXPORTS = {
    "SegmentationData": ".build",
    "build_datasets": ".build",
    "CheckReport": ".check",
    "check_dataset": ".check",
    "build_image_processor": ".image_processor",
    "LabelSpec": ".labels",
    "make_loader": ".loaders",
    "load_source": ".sources",
    "Source": ".sources.base",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = list(_EXPORTS)
