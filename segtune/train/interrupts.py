"""Stopping a run without losing it: the step-start snapshot, SIGTERM, and what is saved on the way out.

A stop in the middle of a step (Ctrl-C, SIGTERM from a scheduler, an exception) leaves RNG states and
BatchNorm statistics part-way through it. The loop snapshots them at every step boundary
(`StepSnapshot`, host-side values and device-to-device copies only, so nothing waits for the GPU); on a
stop they are put back and the last completed step is checkpointed, so `--resume latest` continues
bit for bit. How the stop reaches the user:

- Ctrl-C and SIGTERM: a one-line TrainingError saying where the resumable checkpoint is;
- any other exception: saved, one line on stderr saying where, then the original exception: a user
  error (bad data found mid-run) the command prints as one `error:` line, a bug or a CUDA out-of-memory
  error with its full traceback.

Where saving on the way out fails, the line names the last good checkpoint instead; for a full disk it is
`disk_space.py`'s line, with the space needed and the space free.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import torch

from ..errors import TrainingError
from .disk_space import NoSpaceError


@dataclass
class StepSnapshot:
    """What a half-done step changes besides gradients: RNG states and buffers (BatchNorm statistics)."""

    cpu_rng: torch.Tensor
    device_rng: torch.Tensor | None
    buffers: dict[str, torch.Tensor]

    @classmethod
    def capture(cls, model: torch.nn.Module, device: torch.device) -> StepSnapshot:
        # Only this process's own GPU: every process touching every GPU would make a context on each.
        device_rng = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
        buffers = {name: buffer.detach().clone() for name, buffer in model.named_buffers()}
        return cls(torch.get_rng_state(), device_rng, buffers)

    def restore(self, model: torch.nn.Module, device: torch.device) -> None:
        torch.set_rng_state(self.cpu_rng)
        if self.device_rng is not None:
            torch.cuda.set_rng_state(self.device_rng, device)
        with torch.no_grad():
            for name, buffer in model.named_buffers():
                buffer.copy_(self.buffers[name])


class Terminated(Exception):
    """SIGTERM (e.g. a scheduler's preemption), handled like Ctrl-C."""


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated()


@contextmanager
def sigterm_raises() -> Iterator[None]:
    """Within the block, SIGTERM raises `Terminated` (main thread only, as Python's signal handlers)."""
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _stop_reason(error: BaseException | None) -> str | None:
    """Ctrl-C or SIGTERM, where `error` is one or was raised while handling one.

    A signal sent to the whole process group (a terminal's Ctrl-C, a scheduler's SIGTERM) also reaches the
    DataLoader workers; their death then raises a RuntimeError in the main process while it handles its own
    signal, and that is still a stop by the signal, not a bug.
    """
    while error is not None:
        if isinstance(error, KeyboardInterrupt):
            return "interrupted (Ctrl-C)"
        if isinstance(error, Terminated):
            return "terminated (SIGTERM)"
        error = error.__context__
    return None


def stop(error: BaseException, step: int, save: Callable[[], Path | None], latest: Callable[[], str]) -> NoReturn:
    """Save the last completed step with `save` (None: nothing to save), then end the run as the module says.

    `latest` names the newest good checkpoint on disk, for when saving fails too.

    Raises:
        TrainingError: for Ctrl-C and SIGTERM; or when the loss had turned non-finite (nothing is saved).
        The original `error`: for anything else, after one line on stderr saying where the checkpoint is.
    """
    reason = _stop_reason(error)
    try:
        path = save()
    except NoSpaceError as failure:  # says how much is missing, and names the last good checkpoint
        where = str(failure)
    except TrainingError:
        raise  # the loss had already turned non-finite: nothing may be saved
    except Exception as failure:  # any other failed write: the previous checkpoints are untouched
        where = f"saving a checkpoint failed too ({type(failure).__name__}: {failure}); resume from {latest()}"
    else:
        where = f"saved {path}, continue with --resume latest" if path else "no step was completed, nothing saved"
    if reason is not None:
        raise TrainingError(f"training {reason} at step {step}; {where}") from error
    print(f"training stopped at step {step} by {type(error).__name__}; {where}", file=sys.stderr)
    raise error
