"""A training sampler whose order, and the keys it yields, are pure functions of (seed, epoch).

The training dataset derives each item's augmentation from its key, so a run resumed mid-epoch
(with `accelerate.skip_first_batches`) sees exactly the batches a straight run would have seen,
whatever the number of workers.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class EpochSampler(Sampler[int]):
    """Yields `epoch * n + i` for a seeded permutation `i` of `range(n)`.

    It has no `generator` attribute on purpose: Accelerate then leaves it alone instead of
    re-seeding it, and no draw touches the global RNG that dropout uses.
    """

    def __init__(self, num_samples: int, seed: int) -> None:
        self.num_samples = num_samples
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.num_samples, generator=generator)
        return iter((order + self.epoch * self.num_samples).tolist())
