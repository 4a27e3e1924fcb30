"""Where a run reports: the progress bar, Accelerate's trackers and `train_log.jsonl`.

The training loss stays on the device between logging steps (`LossMeter`): reading a GPU value back
(`loss.item()`, `if torch.isfinite(loss)`) makes the CPU wait for the GPU to finish, so it could not
queue the next step while this one runs. A non-finite loss is detected on the device and read back at
the next logging step (or checkpoint, or evaluation), whichever comes first.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from .. import run_dir


class LossMeter:
    """The sum of step losses since the last read, and the first step with a non-finite loss, on the device."""

    def __init__(self, device: torch.device) -> None:
        self.total = torch.zeros((), dtype=torch.float32, device=device)
        self.count = 0
        self.first_bad_step = torch.full((), -1, dtype=torch.int64, device=device)

    def add(self, loss: torch.Tensor, step: int) -> None:
        """Count `loss` (a 0-d tensor) for `step`; nothing is read back."""
        loss = loss.detach().float()
        unseen = (~torch.isfinite(loss)) & (self.first_bad_step < 0)
        self.first_bad_step = torch.where(unseen, step, self.first_bad_step)
        self.total += loss
        self.count += 1

    def bad_step(self) -> int | None:
        """The first step whose loss was NaN or infinite, or None (reads one value back)."""
        step = int(self.first_bad_step)
        return None if step < 0 else step

    def mean(self) -> float:
        """The mean loss since the last call (reads one value back), then start again."""
        value = float(self.total) / max(self.count, 1)
        self.total.zero_()
        self.count = 0
        return value


class TrainLog:
    """The progress bar (main process), Accelerate's trackers and `train_log.jsonl` of one run."""

    def __init__(self, accelerator: Accelerator, output_dir: Path, max_steps: int, step: int) -> None:
        self.accelerator, self.path = accelerator, Path(output_dir) / run_dir.TRAIN_LOG
        # mininterval: a few redraws a second at most, so logs of non-interactive runs stay readable.
        self.bar = tqdm(
            total=max_steps,
            initial=step,
            disable=not accelerator.is_main_process,
            desc="training",
            dynamic_ncols=True,
            mininterval=2.0,
        )

    def advance(self) -> None:
        self.bar.update(1)

    def log(self, values: dict[str, float], step: int) -> None:
        """To Accelerate's trackers, and to `train_log.jsonl` (one JSON object per line) for notebooks and scripts."""
        self.accelerator.log(values, step=step)
        if "train/loss" in values:
            self.bar.set_postfix(loss=f"{values['train/loss']:.4f}", lr=f"{values['train/lr']:.2e}", refresh=False)
        if self.accelerator.is_main_process:
            finite = {k: (v if math.isfinite(v) else None) for k, v in values.items()}  # JSON has no NaN
            with open(self.path, "a") as handle:
                handle.write(json.dumps({"step": step, **finite}) + "\n")

    def print(self, line: str) -> None:
        """A line of its own above the progress bar (main process)."""
        if self.accelerator.is_main_process:
            self.bar.write(line)

    def close(self) -> None:
        self.bar.close()
