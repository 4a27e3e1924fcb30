"""Checkpoints: Accelerate's `save_state` written atomically with a manifest, the last K kept plus the best by
mIoU, and resumed only once checked.

Layout (`run_dir`): `OUTPUT/checkpoints/step-00001000/` holds Accelerate's state (model, optimizer,
scheduler, RNG states), `run_state.json` (step, best mIoU), the `recipe.yaml` it was trained with and
`manifest.json` (every other file's size and SHA-256, `integrity.py`). A checkpoint is first written to
`.tmp-step-...`, fsync'd, and renamed into place only once complete, so an error while writing (a full disk,
`disk_space.py`) never leaves a half checkpoint, and never touches the previous ones.

A damaged checkpoint (by its manifest: a file missing, or of another size) is still listed by
`list_checkpoints`, but it is never resumed from, never named as the last good one, never counts among the
last K that rotation keeps, and so the next rotation deletes it, unless it is the best one, which is always
kept. Rotation checks sizes only (a stat per file); a resume also checks every checksum. A checkpoint without a
manifest, written by a segtune from before manifests, counts as good: old runs still resume, with a note.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NoReturn

import yaml
from accelerate import Accelerator

from .. import run_dir
from ..errors import TrainingError
from ..recipe import Recipe, recipe_from_dict
from .agreement import failures, on_main
from .disk_space import FULL_DISK_SLACK, NoSpaceError, folder_bytes, free_bytes, is_no_space, no_space_message
from .integrity import damage, fsync_folder, has_manifest, write_manifest

logger = logging.getLogger(__name__)

STAGING_PREFIX = ".tmp-"  # a checkpoint being written: never listed, removed before the next one is written

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
    """Checkpoints renamed into place (complete when written, damaged or not since), oldest first."""
    root = run_dir.checkpoint_root(output_dir)
    if not root.is_dir():
        return []
    found = [p for p in root.glob(f"{run_dir.CHECKPOINT_PREFIX}*") if p.is_dir() and (p / run_dir.RUN_STATE).is_file()]
    return sorted(found, key=run_dir.checkpoint_step)


def last_good_checkpoint(output_dir: Path) -> Path | None:
    """The newest checkpoint whose files all have their manifest's sizes (or that has no manifest); None if none."""
    return next((p for p in reversed(list_checkpoints(output_dir)) if damage(p, checksums=False) is None), None)


@contextmanager
def _quiet_accelerate():
    """Accelerate logs seven INFO lines per save or load, naming the temporary folder; segtune prints one."""
    accelerate_logger = logging.getLogger("accelerate.checkpointing")
    level = accelerate_logger.level
    accelerate_logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        accelerate_logger.setLevel(level)


class CheckpointWriteError(RuntimeError):
    """Another process failed to write its part of a checkpoint; that process raises the error itself."""


def save_checkpoint(
    accelerator: Accelerator, output_dir: Path, state: RunState, recipe: Recipe, first_size: Callable[[], int]
) -> Path:
    """Write the state of step `state.step` atomically, with its manifest; return its directory. All processes
    call this.

    The main process removes staging folders left by a kill mid-write, and checks the free space against the
    last good checkpoint's size (`first_size()` bytes when there is none) before anything is written. Every
    process then writes its part to the staging folder; the main process adds the run state, the recipe and
    the manifest, and renames the folder into place. Each step ends with the processes agreeing on its outcome
    (`agreement.py`), so a failure on one stops all. A failed write leaves no staging folder behind.

    Raises:
        NoSpaceError: on every process, when the free space is short (nothing was written), or when a write
            failed on a full disk.
        The original exception, on the process it was raised on, for any other failed write (CheckpointWriteError
            on the other processes).
    """
    root = run_dir.checkpoint_root(output_dir)
    final = root / run_dir.checkpoint_name(state.step)
    staging = final.with_name(f"{STAGING_PREFIX}{final.name}")

    def measure_and_stage() -> tuple[Path | None, int]:  # the main process measures: the others learn the sizes
        last_good = last_good_checkpoint(output_dir)
        needed = folder_bytes(last_good) if last_good else first_size()
        _make_staging(staging, state.step, needed, last_good)
        return last_good, needed

    last_good, needed = on_main(accelerator, measure_and_stage)
    failed = failures(accelerator, lambda: _write(accelerator, staging, state, recipe))
    if not failed:
        failed = failures(accelerator, lambda: _publish(accelerator, staging, final))
    if failed:
        _give_up(accelerator, failed, staging, lambda: no_space_message(state.step, needed, root, last_good))
    return final


def _make_staging(staging: Path, step: int, needed: int, last_good: Path | None) -> None:
    root = staging.parent
    root.mkdir(parents=True, exist_ok=True)
    for leftover in root.glob(f"{STAGING_PREFIX}{run_dir.CHECKPOINT_PREFIX}*"):
        shutil.rmtree(leftover, ignore_errors=True)  # before measuring: its space is this checkpoint's to use
    if free_bytes(root) < needed:
        raise NoSpaceError(no_space_message(step, needed, root, last_good))
    staging.mkdir()


def _write(accelerator: Accelerator, staging: Path, state: RunState, recipe: Recipe) -> None:
    with _quiet_accelerate():
        accelerator.save_state(str(staging))
    if accelerator.is_main_process:
        state.save(staging)
        recipe.save(staging / run_dir.RECIPE)


def _publish(accelerator: Accelerator, staging: Path, final: Path) -> None:
    """Main process, once every process has written its part: manifest, then the rename that publishes."""
    if not accelerator.is_main_process:
        return
    run_dir.honour_umask(staging.rglob("*"))
    write_manifest(staging)
    if final.exists():  # a re-run of the same step (e.g. after an interrupted save): replace it
        shutil.rmtree(final)
    os.replace(staging, final)
    fsync_folder(final.parent)  # the rename itself must survive a power cut


def _give_up(
    accelerator: Accelerator, failed: list[tuple[int, Exception]], staging: Path, no_space: Callable[[], str]
) -> NoReturn:
    """Remove the staging folder and raise the same kind of error on every process (see `save_checkpoint`)."""

    def clean_up() -> str | None:
        # Measured before the removal: a disk filled by this write has next to nothing left now.
        full = any(is_no_space(error) for _, error in failed) or free_bytes(staging.parent) < FULL_DISK_SLACK
        shutil.rmtree(staging, ignore_errors=True)
        return no_space() if full else None  # the free space after the removal, as the pre-check saw it

    message = on_main(accelerator, clean_up)
    own = next((error for index, error in failed if index == accelerator.process_index), None)
    if message is not None:
        raise NoSpaceError(message) from own
    if own is not None:
        raise own
    index, error = failed[0]
    raise CheckpointWriteError(f"process {index} failed to write {staging}: {type(error).__name__}: {error}")


def load_checkpoint(accelerator: Accelerator, checkpoint: Path) -> RunState:
    """Load Accelerate's state from `checkpoint` into the prepared objects; return the run state."""
    with _quiet_accelerate():
        accelerator.load_state(str(checkpoint))
    return RunState.load(checkpoint)


def rotate_checkpoints(output_dir: Path, keep_last: int, best_step: int | None) -> list[Path]:
    """Delete all but the `keep_last` newest good checkpoints and the best one; return what was deleted.

    A damaged checkpoint (module docstring) takes none of the `keep_last` places: it is deleted, with a warning.
    """
    checkpoints = list_checkpoints(output_dir)
    problems = {p: damage(p, checksums=False) for p in checkpoints}
    keep = set([p for p in checkpoints if problems[p] is None][-keep_last:])
    keep |= {p for p in checkpoints if best_step is not None and run_dir.checkpoint_step(p) == best_step}
    deleted = [p for p in checkpoints if p not in keep]
    for path in deleted:
        if problems[path] is not None:
            logger.warning(f"deleting damaged checkpoint {path}: {problems[path]}")
        shutil.rmtree(path)
    return deleted


def resolve_resume(output_dir: Path, resume: str, checksums: bool = True) -> Path:
    """`latest` -> the newest good checkpoint under `output_dir`, warning of each newer one skipped and why;
    otherwise the checkpoint at path `resume`, which must be good. Good: every file as its manifest lists it
    (sizes, and with `checksums` the contents), or no manifest at all, which is noted.

    Raises:
        TrainingError: nothing to resume from; or the checkpoint at `resume` is damaged, naming the file.
    """
    if resume == "latest":
        checkpoints = list_checkpoints(output_dir)
        if not checkpoints:
            raise TrainingError(f"--resume latest: no checkpoint under {run_dir.checkpoint_root(output_dir)}")
        for path in reversed(checkpoints):
            problem = damage(path, checksums)
            if problem is None:
                return _noted(path)
            logger.warning(f"--resume latest: skipping {path}: {problem}")
        raise TrainingError(
            f"--resume latest: every checkpoint under {run_dir.checkpoint_root(output_dir)} is damaged "
            f"({len(checkpoints)}, each named above)"
        )
    path = Path(resume)
    if not (path / run_dir.RUN_STATE).is_file():
        raise TrainingError(
            f"--resume {resume}: expected a checkpoint directory holding {run_dir.RUN_STATE}, found none"
        )
    problem = damage(path, checksums)
    if problem is not None:
        raise TrainingError(f"--resume {resume}: damaged checkpoint, {problem}")
    return _noted(path)


def _noted(checkpoint: Path) -> Path:
    if not has_manifest(checkpoint):
        logger.warning(
            f"{checkpoint} has no {run_dir.MANIFEST} (written before segtune checked checkpoints): resuming it unchecked"
        )
    return checkpoint


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
