"""Training: the Accelerate loop, optimizer groups and schedule, checkpoints, evaluation, outputs."""

from .loop import train

__all__ = ["train"]
