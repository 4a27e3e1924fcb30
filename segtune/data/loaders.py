"""Collation and DataLoaders.

Training batches are the compact samples of `TrainTransform` stacked by torch's `default_collate`, which
writes a worker's batch straight into shared memory. Evaluation keeps native resolution, so sizes may
differ within a batch: `eval_collate` stacks a key when every sample in the batch has the same shape for
it and returns a list of per-sample tensors otherwise (decided per key and per batch). Consumers handle
both:

    for batch in eval_loader:
        for labels in batch["labels"]:   # iterating a (B, H, W) tensor or a list gives (H, W) tensors
            ...

A sample's DatasetError crosses from a worker as data, not as a wrapped traceback (`carry.py`).
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterable
from types import TracebackType
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate

from .build import EvalDataset
from .carry import CarryErrors, carried

Batch = dict[str, Any]


def train_collate(samples: list[dict[str, torch.Tensor]]) -> Batch:
    """{"image": uint8 (B, 3, h, w), "labels": (B, h, w), "valid_size": (B, 2)}, and "photometric" (B, 5) when
    the samples carry it."""
    return carried(samples) or default_collate(samples)


def eval_collate(samples: list[dict[str, torch.Tensor] | None]) -> Batch:
    """{"pixel_values", "labels"}: each a stacked tensor when shapes agree, else a list.

    The items' original "image" stays behind: scoring does not need it, and it would add a fifth to what
    crosses from a worker (the prediction grid reads it from the dataset). Samples skipped under
    `data.skip_invalid` (None) are left out, so a batch may be smaller than asked, or empty (every value
    an empty list).
    """
    error = carried(samples)
    if error:
        return error
    kept = [s for s in samples if s is not None]
    batch: Batch = {}
    for key in ("pixel_values", "labels"):
        values = [s[key] for s in kept]
        same = bool(values) and all(v.shape == values[0].shape for v in values)
        batch[key] = torch.stack(values) if same else values
    return batch


def leave_stopping_to_the_main_process(worker_id: int) -> None:
    """A DataLoader worker's `worker_init_fn`: on SIGTERM, end at once with exit status 0.

    A scheduler's SIGTERM (a preemption) goes to the whole process group. A worker killed by the signal makes
    the main process raise "DataLoader worker is killed by signal" at any moment (PyTorch's SIGCHLD handler),
    in the middle of saving the resumable checkpoint too; a worker that exits with status 0 does not. The
    main process saves from its last step boundary, which needs no worker. Ignoring SIGTERM instead would
    hang the main process's exit: multiprocessing ends daemonic children with SIGTERM and waits for them,
    and a loader left open (in a kept traceback, say) still has its workers then.
    """
    signal.signal(signal.SIGTERM, lambda signum, frame: os._exit(0))
    sys.excepthook = _quiet_on_reset


def _quiet_on_reset(kind: type[BaseException], error: BaseException, traceback: TracebackType | None) -> None:
    """A worker's `sys.excepthook`, which only multiprocessing's resource-sharing thread reaches (the worker loop
    catches everything else): a main process stopped while it received a batch resets the connection that
    hands over the batch's shared memory, and that thread would print the reset's traceback into the job's
    stderr, after the run's one line. Other errors print as usual."""
    if not issubclass(kind, ConnectionError):
        sys.__excepthook__(kind, error, traceback)


def make_loader(
    dataset: Dataset,
    batch_size: int,
    num_workers: int = 0,
    sampler: Sampler | Iterable[int] | None = None,
    drop_last: bool = False,
    generator: torch.Generator | None = None,
) -> DataLoader:
    """A DataLoader with segtune's defaults, in the order of `sampler` (default: the dataset's own order).

    Batches are collated by `eval_collate` for an EvalDataset and `train_collate` otherwise. Workers
    persist across epochs (no re-fork per epoch); memory is pinned when CUDA is available. Training
    passes its own `sampler` of integer keys (epoch * len + index); augmentation depends on the key alone,
    so batches are identical for any `num_workers`. `generator` seeds the workers (default: the global RNG).
    A sample's DatasetError comes back as `{"error": message}` (see `carry.py`). Workers end quietly on
    SIGTERM (`leave_stopping_to_the_main_process`).
    """
    return DataLoader(
        CarryErrors(dataset),
        batch_size=batch_size,
        sampler=sampler,
        drop_last=drop_last,
        num_workers=num_workers,
        collate_fn=eval_collate if isinstance(dataset, EvalDataset) else train_collate,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=num_workers > 0,
        generator=generator,
        worker_init_fn=leave_stopping_to_the_main_process,
    )
