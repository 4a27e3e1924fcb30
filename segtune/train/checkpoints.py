"""Checkpoints: Accelerate's `save_state` written atomically, the last K kept plus the best by mIoU.

Layout: `OUTPUT/checkpoints/step-00001000/` holds Accelerate's state (model, optimizer, scheduler,
RNG states), `run_state.json` (step, best mIoU) and the `recipe.yaml` it was trained with. A checkpoint
is first written to `.tmp-step-...` and renamed into place only once complete, so an error while
writing never leaves a half checkpoint, and never touches the previous ones.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml
from accelerate import Accelerator

from ..errors import TrainingError
from ..recipe import Recipe, recipe_from_dict

CHECKPOINTS = "checkpoints"
STATE_FILE = "run_state.json"
RECIPE_FILE = "recipe.yaml"
PREFIX = "step-"

# Keys that do not change the trained weights: a resume may change them.
RESUMABLE_CHANGES = (
    "train.output_dir",
    "train.save_steps",
    "train.save_total_limit",
    "train.logging_steps",
    "train.eval_steps",
    "data.num_workers",
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

    def save(self, directory: Path) -> None:
        (directory / STATE_FILE).write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, directory: Path) -> RunState:
        return cls(**json.loads((directory / STATE_FILE).read_text()))


def checkpoint_root(output_dir: Path) -> Path:
    return Path(output_dir) / CHECKPOINTS


def list_checkpoints(output_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    root = checkpoint_root(output_dir)
    found = [p for p in root.glob(f"{PREFIX}*") if p.is_dir() and (p / STATE_FILE).is_file()] if root.is_dir() else []
    return sorted(found, key=lambda p: int(p.name[len(PREFIX) :]))


def save_checkpoint(accelerator: Accelerator, output_dir: Path, state: RunState, recipe: Recipe) -> Path:
    """Write the state of step `state.step` atomically; return its directory. All processes call this."""
    final = checkpoint_root(output_dir) / f"{PREFIX}{state.step:08d}"
    staging = final.with_name(f".tmp-{final.name}")
    if accelerator.is_main_process:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(staging))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        state.save(staging)
        recipe.save(staging / RECIPE_FILE)
        if final.exists():  # a re-run of the same step (e.g. after an interrupted save): replace it
            shutil.rmtree(final)
        os.replace(staging, final)
    accelerator.wait_for_everyone()
    return final


def rotate_checkpoints(output_dir: Path, keep_last: int, best_step: int | None) -> list[Path]:
    """Delete all but the `keep_last` newest checkpoints and the best one; return what was deleted."""
    checkpoints = list_checkpoints(output_dir)
    keep = set(checkpoints[-keep_last:])
    keep |= {p for p in checkpoints if best_step is not None and p.name == f"{PREFIX}{best_step:08d}"}
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
            raise TrainingError(f"--resume latest: no checkpoint under {checkpoint_root(output_dir)}")
        return checkpoints[-1]
    path = Path(resume)
    if not (path / STATE_FILE).is_file():
        raise TrainingError(f"--resume {resume}: expected a checkpoint directory holding {STATE_FILE}, found none")
    return path


def check_same_recipe(checkpoint: Path, recipe: Recipe) -> None:
    """Refuse to resume a checkpoint trained with a recipe that would change the weights.

    Raises:
        TrainingError: naming each differing key with both values.
    """
    saved = recipe_from_dict(yaml.safe_load((checkpoint / RECIPE_FILE).read_text())).flat()
    current = recipe.flat()
    differing = [
        f"{key}: checkpoint {saved.get(key)!r}, now {current.get(key)!r}"
        for key in sorted(set(saved) | set(current))
        if saved.get(key) != current.get(key) and not key.startswith(RESUMABLE_CHANGES)
    ]
    if differing:
        raise TrainingError(f"cannot resume {checkpoint} with a different recipe:\n  " + "\n  ".join(differing))
