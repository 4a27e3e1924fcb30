"""When a run ends: `train.max_epochs` as a step count, and early stopping on the evaluation mIoU.

Epochs are converted once, from the training split size, the per-device batch, the number of processes and
gradient accumulation, as the prepared DataLoader counts them (drop_last). The count is kept in `RunState`,
so a resume that would count differently (on another number of processes, say) is refused instead of
stretching or squeezing the learning-rate schedule mid-run.

Early stopping counts evaluations as transformers' `EarlyStoppingCallback` does: an evaluation whose mIoU
beats the best so far by at least `train.early_stopping_min_delta` resets the count, any other adds one, and
the run stops when the count reaches `train.early_stopping_patience`. The best mIoU is the highest seen
(small gains raise it too, without resetting the count). The count lives in `RunState` and survives a resume.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from .. import run_dir
from ..errors import TrainingError
from ..recipe import TrainConfig
from .checkpoints import RunState


@dataclass(frozen=True)
class RunLength:
    """How many optimizer steps a run takes, and how `train.max_epochs` was converted to them.

    Attributes:
        max_steps: the run's length in optimizer steps.
        conversion: `max_epochs 3 = 192 steps (...)`, or None when `train.max_steps` gives the length.
    """

    max_steps: int
    conversion: str | None = None


def run_length(train: TrainConfig, num_samples: int, num_processes: int) -> RunLength:
    """The length of a run on `num_processes` processes over a training split of `num_samples` samples.

    Raises:
        TrainingError: `train.max_epochs` makes no optimizer step (a split smaller than one step's batches).
    """
    if train.max_epochs is None:
        return RunLength(train.max_steps)
    batch, accumulation = train.per_device_batch_size, train.gradient_accumulation_steps
    # As Accelerate's BatchSamplerShard with drop_last: whole batches, split evenly over the processes.
    per_epoch = num_samples // batch // num_processes
    # Accumulation runs across epoch ends (the loop counts micro-batches), so whole epochs are divided once.
    steps = train.max_epochs * per_epoch // accumulation
    processes = f"{num_processes} process{'es' if num_processes > 1 else ''}"
    dropped = num_samples - per_epoch * batch * num_processes
    conversion = (
        f"max_epochs {train.max_epochs} = {steps} steps ({num_samples} samples / ({batch} per device x {processes} x "
        f"{accumulation} accumulation)" + (f", {dropped} left out of each epoch by drop_last)" if dropped else ")")
    )
    if steps == 0:
        raise TrainingError(f"train.max_epochs={train.max_epochs} makes no optimizer step: {conversion}")
    return RunLength(steps, conversion)


def check_resumed_length(state: RunState, length: RunLength, checkpoint: Path) -> None:
    """Refuse to resume `checkpoint` (whose run state is `state`) for a run of another length.

    Raises:
        TrainingError: the checkpoint's run was `state.max_steps` steps long, and this one is not.
    """
    if state.max_steps is None or state.max_steps == length.max_steps:  # None: written before lengths were kept
        return
    raise TrainingError(
        f"cannot resume {checkpoint}: its run is {state.max_steps} steps long, and here {length.conversion}; "
        "its learning-rate schedule and epochs would no longer match. Resume on the number of processes "
        "it started with (and the same training split), or start again with --overwrite"
    )


def count_evaluation(state: RunState, miou: float, min_delta: float) -> None:
    """Count one evaluation of `miou` for early stopping; call it before `state.best_miou` takes `miou` in."""
    best = state.best_miou
    gain = math.inf if best is None else miou - best
    # A gain of min_delta counts even when float rounding puts it a hair below (0.35 - 0.3 < 0.05).
    gained = gain > 0 and (gain >= min_delta or math.isclose(gain, min_delta, rel_tol=1e-9))
    state.evals_without_gain = 0 if gained else state.evals_without_gain + 1


def stops_early(train: TrainConfig, state: RunState) -> bool:
    """Whether early stopping has run out of patience."""
    patience = train.early_stopping_patience
    return patience is not None and state.evals_without_gain >= patience


def saves_new_best(train: TrainConfig, state: RunState) -> bool:
    """Whether the evaluation of this step set a new best that early stopping will need on disk.

    Early stopping writes its outputs from the best checkpoint, so an evaluation that sets a new best is
    checkpointed even between `train.save_steps`: any eval_steps and save_steps work together.
    """
    return train.early_stopping_patience is not None and state.best_step == state.step


def best_checkpoint(output_dir: Path, state: RunState) -> Path:
    """The checkpoint of the best evaluation, which early stopping writes the outputs from.

    Raises:
        TrainingError: it is not on disk (deleted, or the run was resumed from a copy in another directory).
    """
    path = run_dir.checkpoint_root(output_dir) / run_dir.checkpoint_name(state.best_step)
    if not (path / run_dir.RUN_STATE).is_file():
        raise TrainingError(
            f"early stopping at step {state.step}: expected the best checkpoint (step {state.best_step}, "
            f"mIoU {state.best_miou:.4f}) at {path}, found none; its outputs come from that checkpoint"
        )
    return path


def early_stopping_line(train: TrainConfig, state: RunState) -> str:
    """The one line that says a run stopped early, and where its outputs come from."""
    delta, patience = train.early_stopping_min_delta, train.early_stopping_patience
    gain = f"gain >= {delta}" if delta else "gain"
    evaluations = f"{patience} evaluation{'s' if patience > 1 else ''}"
    return (
        f"early stopping at step {state.step}: no mIoU {gain} in {evaluations}; "
        f"outputs from the best checkpoint, step {state.best_step} (mIoU {state.best_miou:.4f})"
    )


def early_stopping_record(train: TrainConfig, state: RunState) -> dict:
    """metrics.json's keys for early stopping: none when it is off; `stopped_early`, and when it stopped,
    `stopped_early_at_step` and `step` set to the best step, whose weights the outputs are."""
    if train.early_stopping_patience is None:
        return {}
    if not stops_early(train, state):
        return {"stopped_early": False}
    return {"stopped_early": True, "stopped_early_at_step": state.step, "step": state.best_step}
