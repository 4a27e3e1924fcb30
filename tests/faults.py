"""Faults injected into checkpoint writes: in this process through monkeypatch, or in a launched one by a script."""

from __future__ import annotations

import errno
import re
from collections.abc import Callable
from pathlib import Path

import accelerate.utils.other


def disk_full_at(call: int) -> Callable:
    """Accelerate's safetensors writer (`accelerate.utils.other.safe_save_file`, one call per checkpoint), except
    that its `call`-th call writes part of the file, then fails as a full disk does."""
    real, calls = accelerate.utils.other.safe_save_file, []

    def writer(tensors: dict, filename: str, metadata: dict | None = None) -> None:
        calls.append(filename)
        if len(calls) == call:
            Path(filename).write_bytes(b"\0" * 1000)  # part of it got there
            raise OSError(errno.ENOSPC, "No space left on device")
        real(tensors, filename, metadata=metadata)

    return writer


def no_space_line(step: int, needed: str, free: str, last_good: Path) -> str:
    """A regular expression for the line a full disk ends a run with; `needed` and `free` are ones too (MB)."""
    return (
        rf"no space left on device: checkpoint step {step} needs about {needed} MB, {free} MB free in "
        rf"{re.escape(str(last_good.parent))}; the last good checkpoint is {re.escape(str(last_good))}"
    )


# `segtune/finetune.py` with the disk full at the second checkpoint, for `accelerate launch`; format with the
# repository root, so that the launched processes import this segtune and these tests, installed or not.
FINETUNE_ON_A_FULL_DISK = """
import sys

sys.path.insert(0, {root!r})
import accelerate.utils.other

from tests.faults import disk_full_at

accelerate.utils.other.safe_save_file = disk_full_at(2)

from segtune.finetune import main

sys.exit(main())
"""
