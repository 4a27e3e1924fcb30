"""Training: the Accelerate loop and what it needs.

| module          | concern                                                              |
|-----------------|----------------------------------------------------------------------|
| loop.py         | prepare, then per step accumulate, backward, step, log; eval and save |
| optim.py        | AdamW parameter groups (head lr x10, no decay on norms) and schedule |
| losses.py       | the `loss:` section's terms (ce, ohem, dice, jaccard, focal, lovasz) |
| criterion.py    | recipe + data -> the loss; class weights (a list, or `auto`)         |
| checkpoints.py  | atomic `save_state`, rotation, resume                                |
| integrity.py    | checkpoint manifests: sizes and SHA-256, fsync, the checks           |
| disk_space.py   | free space before a checkpoint; a full disk told from other errors   |
| agreement.py    | processes agreeing: the main one decides, a failure on one stops all |
| interrupts.py   | step-start snapshot, SIGTERM, saving on the way out                  |
| tracking.py     | progress bar, trackers, train_log.jsonl; the loss kept on the device |
| output_dir.py   | never write over a finished or unfinished run unless asked           |
| outputs.py      | the final model and results                                          |
| sampler.py      | keyed epoch order, for exact resume                                  |
| stopping.py     | when a run ends: max_epochs as steps, early stopping on mIoU         |
| threads.py      | CPU tuning                                                           |
"""

from .loop import train

__all__ = ["train"]
