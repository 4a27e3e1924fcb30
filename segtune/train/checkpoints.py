"""Checkpoints: Accelerate's `save_state` written atomically, the last K kept plus the best by mIoU.

Layout (`run_dir`): `OUTPUT/checkpoints/step-00001000/` holds Accelerate's state (model, optimizer,
scheduler, RNG states), `run_state.json` (step, best mIoU) and the `recipe.yaml` it was trained with. A
checkpoint is first written to `.tmp-step-...` and renamed into place only once complete, so an error
while writing never leaves a half checkpoint, and never touches the previous ones.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml
from accelerate import Accelerator

from .. import run_dir
from ..errors import TrainingError
from ..recipe import Recipe, recipe_from_dict

# Keys that do not change the trained weights: a resume may change them.
RESUMABLE_CHANGES = (
    "train.output_dir",
    "train.save_steps",
    "train.save_total_limit",
    "train.logging_steps",
    "train.eval_steps",
    "train.compile",
    "data.num_workers",
    "data.check",
    "eval.",
    "hub.",
    "logging.",
    "name",
)


@dataclass
class RunState:
    """What the loop needs, beyond Accelerate's state, to continue exactly."""

    step: int = 0
    best_miou: float | None = None
    best_step: int | None = None
    evals_without_gain: int = 0  # early stopping's count (stopping.py)
    max_steps: int | None = None  # the run's length in steps, also when max_epochs set it (None: older segtune)

    def save(self, directory: Path) -> None:
        (directory / run_dir.RUN_STATE).write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, directory: Path) -> RunState:
        return cls(**json.loads((directory / run_dir.RUN_STATE).read_text()))


def list_checkpoints(output_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    root = run_dir.checkpoint_root(output_dir)
    if not root.is_dir():
        return []
    found = [p for p in root.glob(f"{run_dir.CHECKPOINT_PREFIX}*") if p.is_dir() and (p / run_dir.RUN_STATE).is_file()]
    return sorted(found, key=run_dir.checkpoint_step)


@contextmanager
def _quiet_accelerate():
    """Accelerate logs seven INFO lines per save or load, naming the temporary folder; segtune prints one."""
    logger = logging.getLogger("accelerate.checkpointing")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def save_checkpoint(accelerator: Accelerator, output_dir: Path, state: RunState, recipe: Recipe) -> Path:
    """Write the state of step `state.step` atomically; return its directory. All processes call this."""
    final = run_dir.checkpoint_root(output_dir) / run_dir.checkpoint_name(state.step)
    staging = final.with_name(f".tmp-{final.name}")
    if accelerator.is_main_process:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
    accelerator.wait_for_everyone()
    with _quiet_accelerate():
        accelerator.save_state(str(staging))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        state.save(staging)
        recipe.save(staging / run_dir.RECIPE)
        run_dir.honour_umask(staging.rglob("*"))
        if final.exists():  # a re-run of the same step (e.g. after an interrupted save): replace it
            shutil.rmtree(final)
        os.replace(staging, final)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator: Accelerator, checkpoint: Path) -> RunState:
    """Load Accelerate's state from `checkpoint` into the prepared objects; return the run state."""
    with _quiet_accelerate():
        accelerator.load_state(str(checkpoint))
    return RunState.load(checkpoint)


def rotate_checkpoints(output_dir: Path, keep_last: int, best_step: int | None) -> list[Path]:
    """Delete all but the `keep_last` newest checkpoints and the best one; return what was deleted."""
    checkpoints = list_checkpoints(output_dir)
    keep = set(checkpoints[-keep_last:])
    keep |= {p for p in checkpoints if best_step is not None and run_dir.checkpoint_step(p) == best_step}
    deleted = [p for p in checkpoints if p not in keep]
    for path in deleted:
        shutil.rmtree(path)
    return deleted


def resolve_resume(output_dir: Path, resume: str) -> Path:
    """`latest` -> the newest complete checkpoint under `output_dir`; otherwise a checkpoint path.

    Raises:
        TrainingError: nothing to resume from.
    """
    if resume == "latest":
        checkpoints = list_checkpoints(output_dir)
        if not checkpoints:
            raise TrainingError(f"--resume latest: no checkpoint under {run_dir.checkpoint_root(output_dir)}")
        return checkpoints[-1]
    path = Path(resume)
    if not (path / run_dir.RUN_STATE).is_file():
        raise TrainingError(
            f"--resume {resume}: expected a checkpoint directory holding {run_dir.RUN_STATE}, found none"
        )
    return path


def check_same_recipe(checkpoint: Path, recipe: Recipe) -> None:
    """Refuse to resume a checkpoint trained with a recipe that would change the weights.

    Raises:
        TrainingError: naming each differing key with both values.
    """
    saved = recipe_from_dict(yaml.safe_load((checkpoint / run_dir.RECIPE).read_text())).flat()
    current = recipe.flat()
    differing = [
        f"{key}: checkpoint {saved.get(key)!r}, now {current.get(key)!r}"
        for key in sorted(set(saved) | set(current))
        if saved.get(key) != current.get(key) and not key.startswith(RESUMABLE_CHANGES)
    ]
    if differing:
        raise TrainingError(f"cannot resume {checkpoint} with a different recipe:\n  " + "\n  ".join(differing))
