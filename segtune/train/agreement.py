"""Processes that agree: what the main process decides, every process learns; what fails on one, every one knows.

Writing a checkpoint takes several processes (each writes its RNG state, the main one the rest) and only the
main one publishes it. A process that raised alone would leave the others waiting for it forever at their
next collective call, so each step of a save reports its outcome through one: `on_main` broadcasts the main
process's answer (or its exception), `failures` gathers every process's. With one process both are plain calls.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from typing import TypeVar

from accelerate import Accelerator
from accelerate.utils import broadcast_object_list, gather_object

T = TypeVar("T")


def _sendable(error: Exception) -> Exception:
    """`error`, or a RuntimeError saying the same where it cannot be pickled (and so sent to the others)."""
    try:
        pickle.dumps(error)
    except Exception:
        return RuntimeError(f"{type(error).__name__}: {error}")
    return error


def on_main(accelerator: Accelerator, compute: Callable[[], T]) -> T:
    """`compute()` on the main process only; a collective call on every process.

    Returns:
        What `compute()` returned on the main process, on every process.

    Raises:
        What `compute()` raised on the main process, on every process (the others raise a copy).
    """
    outcome: list = [None]
    if accelerator.is_main_process:
        try:
            outcome = [(True, compute())]
        except Exception as error:
            if accelerator.num_processes == 1:
                raise
            broadcast_object_list([(False, _sendable(error))])
            raise
    if accelerator.num_processes > 1:
        broadcast_object_list(outcome)
    succeeded, value = outcome[0]
    if succeeded:
        return value
    raise value


def failures(accelerator: Accelerator, work: Callable[[], None]) -> list[tuple[int, Exception]]:
    """Run `work()` on every process; a collective call, so also a barrier.

    Returns:
        (process index, exception) for every process whose `work()` raised, the same list on every process;
        this process's own entry is its original exception, with its traceback.
    """
    own = None
    try:
        work()
    except Exception as error:
        own = error
    if accelerator.num_processes == 1:
        return [] if own is None else [(0, own)]
    gathered = gather_object([(accelerator.process_index, None if own is None else _sendable(own))])
    return [
        (index, own if index == accelerator.process_index else error) for index, error in gathered if error is not None
    ]


__all__ = ["failures", "on_main"]
