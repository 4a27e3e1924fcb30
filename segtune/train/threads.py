"""CPU tuning for training processes without a GPU."""

from __future__ import annotations

import logging
import os

import psutil
import torch

logger = logging.getLogger(__name__)


def tune_cpu(num_processes: int) -> None:
    """Fast CPU training: no denormal floats, and a lone process gets the machine's cores.

    Denormal floats (small gradients, Adam moments) slow x86 CPU kernels many times over. Without `--cpu`,
    `accelerate launch` exports OMP_NUM_THREADS=1 (right for one process per GPU); on a machine without a
    GPU that leaves one process on one core. `accelerate launch --cpu` would use the physical cores: do the
    same.
    """
    torch.set_flush_denormal(True)
    launched_by_accelerate = "ACCELERATE_USE_CPU" in os.environ or "ACCELERATE_MIXED_PRECISION" in os.environ
    if num_processes > 1 or not launched_by_accelerate or os.environ.get("OMP_NUM_THREADS") != "1":
        return
    cores = psutil.cpu_count(logical=False) or os.cpu_count() or 1
    if cores > torch.get_num_threads():
        logger.info(f"using {cores} CPU threads (accelerate launch set OMP_NUM_THREADS=1 for GPU processes)")
        torch.set_num_threads(cores)
