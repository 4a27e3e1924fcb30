"""recipe -> train and eval torch datasets, with the label contract and the image processor.

    data = build_datasets(recipe)
    item = data.train[key]   # any int key >= 0: sample key % len, augmented from (train.seed, key)
    item = data.eval[i]      # native-resolution labels and the original image

Samples are decoded lazily, per access: the `datasets` splits keep `decode=False` Image columns and get a
`with_transform` that reads the files and validates the mask against the LabelSpec. The torch datasets
add the processor's eval preprocessing (labels mapped at native size) or the keyed training augmentation
(labels mapped after cropping). Either way `LabelSpec.map` runs exactly once per item.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import datasets
import numpy as np
import torch
from transformers import SegformerImageProcessor

from ..errors import DatasetError
from ..recipe import Recipe
from .batch_preprocessor import TrainBatchPreprocessor
from .decode import check_same_size, describe, read_image, read_mask
from .image_processor import build_image_processor, eval_pixel_values
from .labels import LabelSpec, label_spec
from .preflight import preflight
from .sources import IMAGE, LABEL, load_source
from .sources.base import undecoded
from .transforms import TrainTransform

logger = logging.getLogger(__name__)


class SkipCounter:
    """Samples skipped under `data.skip_invalid`, counted once each, across DataLoader worker processes.

    Per-split flags live in shared memory, so a sample a worker skips is counted in the main process too.
    """

    def __init__(self, split_sizes: dict[str, int], listing: Sequence[str] = ()) -> None:
        self.listing = list(listing)  # dropped while listing files (unpaired, lossy masks ...)
        self._flags = {split: torch.zeros(n, dtype=torch.bool).share_memory_() for split, n in split_sizes.items()}

    def mark(self, split: str, index: int, reason: str) -> None:
        """Record sample `index` of `split` as skipped (logged the first time)."""
        if not self._flags[split][index]:
            self._flags[split][index] = True
            logger.warning("skipping invalid sample: %s", reason)

    def is_marked(self, split: str, index: int) -> bool:
        return bool(self._flags[split][index])

    @property
    def count(self) -> int:
        """Samples skipped so far: dropped while listing plus found invalid when read."""
        return len(self.listing) + sum(int(flags.sum()) for flags in self._flags.values())

    def summary(self) -> str:
        """One line for the end of a run, e.g. "skipped 3 invalid samples (listing: 1, train: 2, validation: 0)"."""
        parts = [f"listing: {len(self.listing)}"] + [f"{s}: {int(f.sum())}" for s, f in self._flags.items()]
        return f"skipped {self.count} invalid samples ({', '.join(parts)})"


class _Decode:
    """`with_transform` function: stored (image, label) values -> uint8 image (3, H, W) and mask (H, W).

    With `encode`, masks come out as train ids (eval); without, raw but validated (uint8, else int32),
    for the training pipeline to map after cropping.
    """

    def __init__(self, labels: LabelSpec, encode: bool) -> None:
        self.labels, self.encode = labels, encode

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        out: dict[str, list] = {IMAGE: [], LABEL: []}
        for image_value, label_value in zip(batch[IMAGE], batch[LABEL]):
            image_name, mask_name = describe(image_value, "image"), describe(label_value, "mask")
            image = read_image(image_value, image_name)
            raw = read_mask(label_value, mask_name, self.labels.colors)  # colour masks decoded here, in the worker
            check_same_size(tuple(image.shape[-2:]), raw.shape, image_name, mask_name)
            out[IMAGE].append(image)
            if self.encode:
                out[LABEL].append(self.labels.encode(raw, mask_name))
            else:
                self.labels.validate(raw, mask_name)
                out[LABEL].append(torch.from_numpy(raw if raw.dtype == np.uint8 else raw.astype(np.int32)))
        return out


class _SplitDataset(torch.utils.data.Dataset):
    """One split's samples, decoded per access, then given to `transform` (the subclass says how)."""

    _encode_labels = True

    def __init__(
        self,
        samples: datasets.Dataset,
        split: str,
        labels: LabelSpec,
        transform: Callable[..., Any],
        skipped: SkipCounter | None = None,
    ) -> None:
        self.split, self.transform, self.skipped = split, transform, skipped
        self.rows = undecoded(samples)  # as stored, for what reads masks without decoding them here (class pixels)
        self.samples = self.rows.with_transform(_Decode(labels, self._encode_labels))

    def __len__(self) -> int:
        return len(self.samples)

    def _read(self, index: int) -> dict[str, torch.Tensor] | None:
        """The decoded sample, or None when it is invalid and skipping is on."""
        if self.skipped is not None and self.skipped.is_marked(self.split, index):
            return None
        try:
            return self.samples[index]
        except DatasetError as error:
            message = f"{self.split} sample {index}: {error}"
            if self.skipped is None:
                raise DatasetError(message) from None
            self.skipped.mark(self.split, index, message)
            return None


class TrainDataset(_SplitDataset):
    """Augmented training items for ANY key >= 0: sample `key % len(self)`, randomness from (seed, key).

    Item: the compact sample of `TrainTransform` ({"image": uint8 (3, *crop_size), "labels": train ids
    (*crop_size), "photometric", "valid_size"}), which `TrainBatchPreprocessor` turns into model inputs on
    the training device. Under skip_invalid an invalid sample is replaced by the next valid one.
    """

    _encode_labels = False  # the pipeline maps labels after cropping (EncodeLabels)
    transform: TrainTransform

    def __getitem__(self, key: int) -> dict[str, torch.Tensor]:
        if key < 0:
            raise IndexError(f"training keys are non-negative, found {key}")
        n = len(self)
        for offset in range(n):
            sample = self._read((key + offset) % n)
            if sample is not None:
                return self.transform(sample[IMAGE], sample[LABEL], key)
        raise DatasetError(f"split {self.split!r}: every sample is invalid (see the warnings above)")


@dataclass(frozen=True)
class EvalTransform:
    """uint8 image (3, H, W) -> float32 pixel values, resized and normalised exactly as at inference."""

    processor: SegformerImageProcessor

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        return eval_pixel_values(self.processor, image)


class EvalDataset(_SplitDataset):
    """Evaluation items, labels at native resolution; None for an invalid sample under skip_invalid.

    Item: {"pixel_values": float32 (3, H', W') resized per eval.resize and normalised by the processor,
    "labels": train ids (H, W) native, of `LabelSpec.mask_dtype` (uint8 for most datasets: 8x less to move
    out of a worker than int64), "image": uint8 (3, H, W) the original RGB image}. `transform` turns the
    image into pixel values (`EvalTransform`).
    """

    def __getitem__(self, index: int) -> dict[str, torch.Tensor] | None:
        sample = self._read(index)
        if sample is None:
            return None
        image = sample[IMAGE]
        return {
            "pixel_values": self.transform(image),
            "labels": sample[LABEL],
            "image": image,
        }


@dataclass
class SegmentationData:
    """Everything the loop needs from the data layer.

    `preprocess` turns a training batch (on its device) into `(pixel_values, labels)` for the model; move it
    to the training device once, with `.to(device)`. `warnings` are the pre-flight check's (a class never in
    training, a split mostly ignored ...), for the caller to print once the run is prepared.
    """

    train: TrainDataset
    eval: EvalDataset
    labels: LabelSpec
    processor: SegformerImageProcessor
    skipped: SkipCounter
    preprocess: TrainBatchPreprocessor
    warnings: list[str] = field(default_factory=list)


def build_datasets(recipe: Recipe, show: Callable[[str], None] = print) -> SegmentationData:
    """The recipe's train and eval datasets, label contract and image processor.

    `show` gets the images per class of a split held out by `data.val_ratio` (`held_out.py`), once; the
    training loop passes `accelerator.print`, so that one process prints it.

    Raises:
        DatasetError: any problem with the source (missing folder, split, column; unpaired files ...), or
            problems the pre-flight check (`data.check`) finds in the samples' files. Problems it does not
            look for are raised when the sample is read. Under data.skip_invalid, bad samples are skipped.
    """
    data, seed = recipe.data, recipe.train.seed
    source = load_source(recipe)
    if source.split_summary:
        show(source.split_summary)
    labels = label_spec(data, source)
    train = _limit(source.splits[data.train_split], data.max_train_samples, seed)
    evaluation = _limit(source.splits[data.eval_split], data.max_eval_samples, seed)
    warnings = preflight(
        {data.train_split: train, data.eval_split: evaluation},
        labels,
        data.check,
        data.skip_invalid,
        source.name,
        seed,
    )
    skipped = SkipCounter({data.train_split: len(train), data.eval_split: len(evaluation)}, source.skipped)
    skip = skipped if data.skip_invalid else None
    processor = build_image_processor(recipe)
    return SegmentationData(
        train=TrainDataset(train, data.train_split, labels, TrainTransform(recipe.augment, labels, seed), skip),
        eval=EvalDataset(evaluation, data.eval_split, labels, EvalTransform(processor), skip),
        labels=labels,
        processor=processor,
        skipped=skipped,
        preprocess=TrainBatchPreprocessor(processor.image_mean, processor.image_std),
        warnings=warnings,
    )


def _limit(split: datasets.Dataset, limit: int | None, seed: int) -> datasets.Dataset:
    """A seeded subset of `limit` samples spread over the split, in their original order.

    Not `split.shuffle(seed=seed).select(range(limit))`, which would also shuffle their order (see `seeded_split`).
    """
    if limit is None or limit >= len(split):
        return split
    chosen = np.random.default_rng(seed).choice(len(split), size=limit, replace=False)
    return split.select(sorted(chosen.tolist()))
