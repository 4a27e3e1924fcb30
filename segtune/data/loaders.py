"""Collation and DataLoaders.

Training batches are the compact samples of `TrainTransform` stacked by torch's `default_collate`, which
writes a worker's batch straight into shared memory. Evaluation keeps native resolution, so sizes may
differ within a batch: `eval_collate` stacks a key when every sample in the batch has the same shape for
it and returns a list of per-sample tensors otherwise (decided per key and per batch). Consumers handle
both:

    for batch in eval_loader:
        for labels in batch["labels"]:   # iterating a (B, H, W) tensor or a list gives (H, W) tensors
            ...

A DatasetError raised inside a worker would reach the main process wrapped in torch's worker traceback.
The loaders carry its one-line message in the batch instead (`{"error": message}`), and the consumer
raises it there (`preprocess.raise_carried_error`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate

from ..errors import DatasetError
from .build import EvalDataset
from .preprocess import ERROR_KEY

Batch = dict[str, Any]


class CarryErrors(Dataset):
    """`dataset`, with a DatasetError of an item returned as `{"error": message}` instead of raised."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: int) -> Any:
        try:
            return self.dataset[key]
        except DatasetError as error:
            return {ERROR_KEY: str(error)}


def _carried(samples: list) -> Batch | None:
    errors = [s[ERROR_KEY] for s in samples if isinstance(s, dict) and ERROR_KEY in s]
    return {ERROR_KEY: errors[0]} if errors else None


def train_collate(samples: list[dict[str, torch.Tensor]]) -> Batch:
    """{"image": uint8 (B, 3, h, w), "labels": (B, h, w), "photometric": (B, 5), "valid_size": (B, 2)}."""
    return _carried(samples) or default_collate(samples)


def eval_collate(samples: list[dict[str, torch.Tensor] | None]) -> Batch:
    """{"pixel_values", "labels"}: each a stacked tensor when shapes agree, else a list.

    The items' original "image" stays behind: scoring does not need it, and it would add a fifth to what
    crosses from a worker (the prediction grid reads it from the dataset). Samples skipped under
    `data.skip_invalid` (None) are left out, so a batch may be smaller than asked, or empty (every value
    an empty list).
    """
    carried = _carried(samples)
    if carried:
        return carried
    kept = [s for s in samples if s is not None]
    batch: Batch = {}
    for key in ("pixel_values", "labels"):
        values = [s[key] for s in kept]
        same = bool(values) and all(v.shape == values[0].shape for v in values)
        batch[key] = torch.stack(values) if same else values
    return batch


def make_loader(
    dataset: Dataset,
    batch_size: int,
    num_workers: int = 0,
    sampler: Sampler | Iterable[int] | None = None,
    shuffle: bool = False,
    drop_last: bool = False,
    collate_fn: Callable | None = None,
    generator: torch.Generator | None = None,
) -> DataLoader:
    """A DataLoader with segtune's defaults.

    `collate_fn` defaults to `eval_collate` for an EvalDataset and `train_collate` otherwise. Workers
    persist across epochs (no re-fork per epoch); memory is pinned when CUDA is available. Training
    passes its own `sampler` of integer keys (epoch * len + index); augmentation depends on the key alone,
    so batches are identical for any `num_workers`. `generator` seeds the workers (default: the global RNG).
    A sample's DatasetError comes back as `{"error": message}` (see `CarryErrors`).
    """
    if collate_fn is None:
        collate_fn = eval_collate if isinstance(dataset, EvalDataset) else train_collate
    return DataLoader(
        CarryErrors(dataset),
        batch_size=batch_size,
        sampler=sampler,
        shuffle=shuffle if sampler is None else False,
        drop_last=drop_last,
        num_workers=num_workers,
        collate_fn=collate_fn,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=num_workers > 0,
        generator=generator,
    )
