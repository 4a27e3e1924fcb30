"""Every use of a library's private API, in one place, each checked by tests/test_compat.py.

When accelerate or evaluate change one of these, that test names it, instead of a training run failing
somewhere in the middle.
"""

from __future__ import annotations

import os

from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState


def reset_accelerate_state() -> None:
    """Forget Accelerate's per-process state, keeping the distributed part (PartialState).

    Accelerate keeps one global state per process, and refuses a second Accelerator with another
    precision or accumulation: a notebook or a sweep that runs two recipes in one process needs this.
    """
    AcceleratorState._reset_state(reset_partial_state=False)
    GradientState._reset_state()


def set_accumulation_counter(accelerator: Accelerator, micro_batches: int) -> None:
    """Set the micro-batch counter Accelerate uses to decide when gradient accumulation syncs.

    A resumed run must continue the count where the checkpoint left it; Accelerate only ever increments it.
    """
    accelerator.step = micro_batches


class NoMetricCache:
    """Mixin for an `evaluate.Metric` that keeps its state in memory: no Arrow cache folder is created.

    `evaluate.Metric.__init__` makes its cache folder through the private `_build_data_dir`.
    """

    def _build_data_dir(self) -> str:
        return os.path.join(self._data_dir_root, self.name, self.config_name)
