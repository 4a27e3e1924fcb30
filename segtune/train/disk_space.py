"""Disk space for checkpoints: the check before writing one, and telling a full disk from other write errors.

A checkpoint is expected to take as much space as the last good one (its files' sizes), or, before the first,
the model's and optimizer's tensors. A full disk is reported as one line with both figures and the checkpoint
to resume from, whichever way it shows: an OSError with ENOSPC (or EDQUOT, a quota), safetensors' "No space
left on device (os error 28)", or torch.save's "unexpected pos ..." which names no cause at all.
"""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

import torch

from ..errors import TrainingError

MB = 1_000_000
# With less free than this after a failed write, the disk was full, whatever the error said: torch.save reports
# a short write as "RuntimeError: [enforce fail at inline_container.cc:672] . unexpected pos ...", no errno.
FULL_DISK_SLACK = 1 << 20
_NO_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
_NO_SPACE_WORDS = ("No space left on device", "Disk quota exceeded", "os error 28", "os error 122")


class NoSpaceError(TrainingError):
    """The disk cannot hold the next checkpoint: nothing of it is left behind, the last good one is named."""


def folder_bytes(folder: Path) -> int:
    """The size of every file under `folder`, in bytes."""
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


def state_bytes(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> int:
    """About what Accelerate's `save_state` writes for `model` and `optimizer`: their tensors' bytes."""
    tensors = list(model.state_dict().values())
    tensors += [v for state in optimizer.state_dict()["state"].values() for v in state.values() if torch.is_tensor(v)]
    return sum(t.numel() * t.element_size() for t in tensors)


def free_bytes(folder: Path) -> int:
    return shutil.disk_usage(folder).free


def no_space_message(step: int, needed: int, folder: Path, last_good: Path | None) -> str:
    """The one line a full disk ends a run with."""
    resume = str(last_good) if last_good else "none (no checkpoint was written yet)"
    return (
        f"no space left on device: checkpoint step {step} needs about {needed / MB:.1f} MB, "
        f"{free_bytes(folder) / MB:.1f} MB free in {folder}; the last good checkpoint is {resume}"
    )


def is_no_space(error: BaseException) -> bool:
    """True when `error`, or an exception it was raised from or during, says the disk or a quota is full: an
    OSError by its errno, any other exception (safetensors' SafetensorError) by its message."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError):  # says it through its errno: its text alone may be anyone's
            if error.errno in _NO_SPACE_ERRNOS:
                return True
        elif any(words in str(error) for words in _NO_SPACE_WORDS):  # safetensors' SafetensorError, say
            return True
        error = error.__cause__ or error.__context__
    return False


__all__ = [
    "FULL_DISK_SLACK",
    "MB",
    "NoSpaceError",
    "folder_bytes",
    "free_bytes",
    "is_no_space",
    "no_space_message",
    "state_bytes",
]
