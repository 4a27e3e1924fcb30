"""The output-directory policy: never write over a finished or unfinished run unless asked to."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from .. import run_dir
from ..errors import TrainingError
from .checkpoints import list_checkpoints

logger = logging.getLogger(__name__)


def check_output_dir(output_dir: Path, resume: str | None, overwrite: bool) -> None:
    """Accept `output_dir` for a new run, a resumed one (`resume`), or a replacement (`overwrite`, which clears it).

    Raises:
        TrainingError: the directory holds a finished run (without --overwrite), or checkpoints
            of an unfinished one (without --resume or --overwrite).
    """
    if overwrite:
        clear_previous_run(output_dir)
        return
    if resume:
        return
    if run_dir.is_finished(output_dir):
        raise TrainingError(
            f"{output_dir} already holds a finished run ({run_dir.METRICS}); pass --overwrite to replace it"
        )
    if list_checkpoints(output_dir):
        raise TrainingError(
            f"{output_dir} holds checkpoints of an unfinished run; pass --resume latest to continue it or --overwrite"
        )


def finished_results(output_dir: Path) -> dict:
    """The recorded final evaluation of the finished run in `output_dir`, announced as such.

    `--resume` on a finished run has nothing to resume: its results stay as they are.
    """
    results = json.loads((output_dir / run_dir.METRICS).read_text())
    logger.info(
        f"{output_dir} already holds a finished run (step {results.get('step')}, mIoU {results['mean_iou']:.4f}): "
        "nothing to resume, its results are unchanged; pass --overwrite to train it again"
    )
    return results


def clear_previous_run(output_dir: Path) -> None:
    """Remove what an earlier run in `output_dir` wrote (checkpoints, logs, results); leave other files alone."""
    if not output_dir.is_dir():
        return
    shutil.rmtree(run_dir.checkpoint_root(output_dir), ignore_errors=True)
    shutil.rmtree(output_dir / run_dir.ADAPTER, ignore_errors=True)  # a later `push --adapter` must not find it
    for name in (run_dir.TRAIN_LOG, *run_dir.RESULT_FILES):
        (output_dir / name).unlink(missing_ok=True)
