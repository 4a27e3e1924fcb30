"""Collation and DataLoaders.

Training batches are stacked tensors. Evaluation keeps native resolution, so sizes may differ within a
batch: `eval_collate` stacks a key when every sample in the batch has the same shape for it and returns
a list of per-sample tensors otherwise (decided per key and per batch). Consumers handle both:

    for batch in eval_loader:
        for labels in batch["labels"]:   # iterating a (B, H, W) tensor or a list gives (H, W) tensors
            ...
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from .build import EvalDataset

Batch = dict[str, torch.Tensor | list[torch.Tensor]]


def train_collate(samples: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """{"pixel_values": float32 (B, 3, h, w), "labels": int64 (B, h, w)}."""
    return {key: torch.stack([s[key] for s in samples]) for key in ("pixel_values", "labels")}


def eval_collate(samples: list[dict[str, torch.Tensor] | None]) -> Batch:
    """{"pixel_values", "labels", "image"}: each a stacked tensor when shapes agree, else a list.

    Samples skipped under `data.skip_invalid` (None) are left out, so a batch may be smaller than asked,
    or empty (every value an empty list).
    """
    kept = [s for s in samples if s is not None]
    batch: Batch = {}
    for key in ("pixel_values", "labels", "image"):
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
    """
    if collate_fn is None:
        collate_fn = eval_collate if isinstance(dataset, EvalDataset) else train_collate
    return DataLoader(
        dataset,
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
