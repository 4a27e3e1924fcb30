"""The fine-tuning loop, on Accelerate: prepare, accumulate, backward, gather_for_metrics, save_state.

One CPU, one GPU, DDP over several GPUs or machines: whatever `accelerate launch` sets up. Nothing
here spawns processes or talks to other ranks except through Accelerate.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import torch
from accelerate import Accelerator, DataLoaderConfiguration
from accelerate.state import AcceleratorState, GradientState
from accelerate.utils import GradientAccumulationPlugin, ProjectConfiguration, set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..data import SegmentationData, build_datasets, make_loader
from ..errors import TrainingError
from ..inference import InferenceConfig
from ..models.build import build_model
from ..recipe import Recipe
from .checkpoints import (
    RunState,
    check_same_recipe,
    list_checkpoints,
    resolve_resume,
    rotate_checkpoints,
    save_checkpoint,
)
from .evaluation import evaluate
from .optim import build_optimizer, build_scheduler
from .outputs import FINISHED_MARKER, GRID_FILE, TABLE_FILE, write_outputs
from .sampler import EpochSampler

logger = logging.getLogger(__name__)
LOG_FILE = "train_log.jsonl"


@dataclass
class Run:
    """Everything one training run holds, once prepared by Accelerate."""

    recipe: Recipe
    accelerator: Accelerator
    data: SegmentationData
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    train_loader: DataLoader
    eval_loader: DataLoader
    state: RunState = field(default_factory=RunState)
    step_start: dict | None = None  # RNG and buffers at the last step boundary, for an exact interrupt checkpoint

    @property
    def output_dir(self) -> Path:
        return self.recipe.output_dir


def make_accelerator(recipe: Recipe) -> Accelerator:
    """Accelerator for this recipe: precision, accumulation, trackers, optional torch.compile."""
    trackers = [t for t in recipe.logging.report_to if t != "none"]
    # Accelerate keeps one global state per process; a second run in the same process (a notebook, a
    # sweep) with another precision would be refused. The distributed part (PartialState) is kept.
    AcceleratorState._reset_state(reset_partial_state=False)
    GradientState._reset_state()
    return Accelerator(
        mixed_precision=recipe.train.mixed_precision,
        # Accumulate by count only: syncing early at each epoch's end would put two optimizer steps in
        # one of ours, and epochs here are an accident of the split size.
        gradient_accumulation_plugin=GradientAccumulationPlugin(
            num_steps=recipe.train.gradient_accumulation_steps, sync_with_dataloader=False
        ),
        log_with=trackers or None,
        project_config=ProjectConfiguration(
            project_dir=str(recipe.output_dir), logging_dir=str(recipe.output_dir / "runs")
        ),
        # The schedule counts optimizer steps; Accelerate must not advance it once per process.
        step_scheduler_with_optimizer=False,
        dataloader_config=DataLoaderConfiguration(even_batches=True),
        dynamo_backend="inductor" if recipe.train.compile else "no",
    )


def check_output_dir(output_dir: Path, resume: str | None, overwrite: bool) -> None:
    """Refuse to write over a finished or unfinished run unless asked to.

    Raises:
        TrainingError: the directory holds a finished run (without --overwrite), or checkpoints
            of an unfinished one (without --resume or --overwrite).
    """
    if overwrite:
        clear_previous_run(output_dir)
        return
    if resume:
        return
    if (output_dir / FINISHED_MARKER).exists():
        raise TrainingError(
            f"{output_dir} already holds a finished run ({FINISHED_MARKER}); pass --overwrite to replace it"
        )
    if list_checkpoints(output_dir):
        raise TrainingError(
            f"{output_dir} holds checkpoints of an unfinished run; pass --resume latest to continue it or --overwrite"
        )


def clear_previous_run(output_dir: Path) -> None:
    """Remove what an earlier run in `output_dir` wrote (checkpoints, logs, results); leave other files alone."""
    if not output_dir.is_dir():
        return
    shutil.rmtree(output_dir / "checkpoints", ignore_errors=True)
    for name in (LOG_FILE, FINISHED_MARKER, TABLE_FILE, GRID_FILE):
        (output_dir / name).unlink(missing_ok=True)


def use_cpu_cores(num_processes: int) -> None:
    """Give a lone CPU process the machine's cores.

    Without `--cpu`, `accelerate launch` exports OMP_NUM_THREADS=1 (right for one process per GPU);
    on a machine without a GPU that leaves one process on one core, 1.35x slower for the demo here on 2 cores.
    `accelerate launch --cpu` would use the physical cores: do the same.
    """
    launched_by_accelerate = "ACCELERATE_USE_CPU" in os.environ or "ACCELERATE_MIXED_PRECISION" in os.environ
    if num_processes > 1 or not launched_by_accelerate or os.environ.get("OMP_NUM_THREADS") != "1":
        return
    cores = psutil.cpu_count(logical=False) or os.cpu_count() or 1
    if cores > torch.get_num_threads():
        logger.info(f"using {cores} CPU threads (accelerate launch set OMP_NUM_THREADS=1 for GPU processes)")
        torch.set_num_threads(cores)


def check_batch_size(recipe: Recipe, num_processes: int) -> None:
    """Warn when the effective batch differs from the batch the recipe's learning rate was set for."""
    t = recipe.train
    effective = num_processes * t.per_device_batch_size * t.gradient_accumulation_steps
    if effective != t.reference_batch_size:
        logger.warning(
            f"effective batch {effective} ({num_processes} processes x {t.per_device_batch_size} per device x "
            f"{t.gradient_accumulation_steps} accumulation) differs from the recipe's reference batch "
            f"{t.reference_batch_size}; the recipe's learning rate was set for {t.reference_batch_size}"
        )


def check_schedule(recipe: Recipe) -> None:
    """Warn when warmup never ends: a short trial run of a long recipe (`--set train.max_steps=100`)."""
    if recipe.optim.warmup_steps >= recipe.train.max_steps:
        logger.warning(
            f"optim.warmup_steps={recipe.optim.warmup_steps} >= train.max_steps={recipe.train.max_steps}: "
            "the learning rate only warms up in this run"
        )


def make_loaders(data: SegmentationData, recipe: Recipe) -> tuple[DataLoader, DataLoader]:
    """Training loader over `EpochSampler` keys, and the evaluation loader."""
    workers = recipe.data.num_workers
    train = make_loader(
        data.train,
        recipe.train.per_device_batch_size,
        workers,
        sampler=EpochSampler(len(data.train), recipe.train.seed),
        drop_last=True,  # equal batches: BatchNorm statistics and the schedule stay comparable
        # Worker seeds come from this generator, not from the global RNG dropout draws from.
        generator=torch.Generator().manual_seed(recipe.train.seed),
    )
    return train, make_loader(data.eval, recipe.eval.batch_size, workers)


def prepare_run(recipe: Recipe, accelerator: Accelerator) -> Run:
    """Data, model, optimizer and schedule, prepared by Accelerate."""
    set_seed(recipe.train.seed, device_specific=True)
    with accelerator.main_process_first():
        data = build_datasets(recipe)
    model = build_model(recipe.model, data.labels.id2label, data.labels.ignore_index)
    if accelerator.num_processes > 1 and accelerator.device.type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    optimizer = build_optimizer(model, recipe.optim)
    scheduler = build_scheduler(optimizer, recipe.optim, recipe.train.max_steps)
    train_loader, eval_loader = make_loaders(data, recipe)
    model, optimizer, scheduler, train_loader, eval_loader = accelerator.prepare(
        model, optimizer, scheduler, train_loader, eval_loader
    )
    return Run(recipe, accelerator, data, model, optimizer, scheduler, train_loader, eval_loader)


def restore(run: Run, resume: str) -> None:
    """Load a checkpoint into the prepared run, refusing one trained with another recipe."""
    checkpoint = resolve_resume(run.output_dir, resume)
    check_same_recipe(checkpoint, run.recipe)
    run.accelerator.load_state(str(checkpoint))
    run.state = RunState.load(checkpoint)
    # Accelerate's micro-batch counter decides when accumulation syncs; a checkpoint written mid-step
    # (on Ctrl-C) must not shift it.
    run.accelerator.step = run.state.step * run.recipe.train.gradient_accumulation_steps
    run.accelerator.print(f"resumed from {checkpoint} at step {run.state.step}")


def micro_batches(run: Run) -> Iterator[dict]:
    """Training batches from the current step on, across epochs, skipping what was already seen."""
    per_epoch = len(run.train_loader)
    if per_epoch == 0:
        raise TrainingError(
            f"the training split has {len(run.data.train)} samples, fewer than one batch of "
            f"{run.recipe.train.per_device_batch_size} x {run.accelerator.num_processes} processes"
        )
    done = run.state.step * run.recipe.train.gradient_accumulation_steps
    epoch, skip = divmod(done, per_epoch)
    while True:
        run.train_loader.set_epoch(epoch)
        loader = run.accelerator.skip_first_batches(run.train_loader, skip) if skip else run.train_loader
        yield from loader
        epoch, skip = epoch + 1, 0


def capture_step_start(model: torch.nn.Module) -> dict:
    """What a half-done step changes besides gradients: RNG states and buffers (BatchNorm statistics)."""
    states = {"torch": torch.get_rng_state(), "buffers": {n: b.detach().clone() for n, b in model.named_buffers()}}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_step_start(model: torch.nn.Module, states: dict) -> None:
    torch.set_rng_state(states["torch"])
    if "cuda" in states:
        torch.cuda.set_rng_state_all(states["cuda"])
    with torch.no_grad():
        for name, buffer in model.named_buffers():
            buffer.copy_(states["buffers"][name])


def train_step(run: Run, batches: Iterator[dict]) -> float:
    """One optimizer step over `gradient_accumulation_steps` micro-batches; return the mean loss.

    Raises:
        TrainingError: the loss is NaN or infinite (nothing is saved: the last checkpoint stays the good one).
    """
    accelerator, model = run.accelerator, run.model
    losses = []
    for _ in range(run.recipe.train.gradient_accumulation_steps):
        batch = next(batches)
        with accelerator.accumulate(model):
            loss = model(pixel_values=batch["pixel_values"], labels=batch["labels"]).loss
            if not torch.isfinite(loss):
                raise TrainingError(
                    f"loss is {loss.item()} at step {run.state.step + 1}: stopping. Lower optim.lr or use "
                    f"train.max_grad_norm; the last good checkpoint is {_latest_name(run)}"
                )
            accelerator.backward(loss)
            if accelerator.sync_gradients and run.recipe.train.max_grad_norm:
                accelerator.clip_grad_norm_(model.parameters(), run.recipe.train.max_grad_norm)
            run.optimizer.step()
            run.optimizer.zero_grad(set_to_none=True)
        losses.append(loss.detach())
    run.scheduler.step()
    run.state.step += 1
    return torch.stack(losses).mean().item()


def _latest_name(run: Run) -> str:
    checkpoints = list_checkpoints(run.output_dir)
    return str(checkpoints[-1]) if checkpoints else "none (no checkpoint was written yet)"


def checkpoint(run: Run) -> Path:
    """Save the state of the current step and drop checkpoints beyond the kept ones."""
    path = save_checkpoint(run.accelerator, run.output_dir, run.state, run.recipe)
    if run.accelerator.is_main_process:
        rotate_checkpoints(run.output_dir, run.recipe.train.save_total_limit, run.state.best_step)
    return path


def periodic_eval(run: Run) -> dict:
    """Evaluate, log, and track the best mIoU."""
    results = evaluate(
        run.model, run.eval_loader, run.accelerator, run.data.labels, InferenceConfig.from_eval(run.recipe.eval)
    )
    miou = float(results["mean_iou"])
    if run.state.best_miou is None or miou > run.state.best_miou:
        run.state.best_miou, run.state.best_step = miou, run.state.step
    log(
        run,
        {
            "eval/mean_iou": miou,
            "eval/mean_accuracy": float(results["mean_accuracy"]),
            "eval/overall_accuracy": float(results["overall_accuracy"]),
        },
    )
    run.accelerator.print(
        f"step {run.state.step}: mIoU {miou:.4f} (best {run.state.best_miou:.4f} at step {run.state.best_step})"
    )
    return results


def log(run: Run, values: dict[str, float]) -> None:
    """To Accelerate's trackers, and to `train_log.jsonl` (one JSON object per line) for notebooks and scripts."""
    run.accelerator.log(values, step=run.state.step)
    if run.accelerator.is_main_process:
        with open(run.output_dir / LOG_FILE, "a") as handle:
            handle.write(json.dumps({"step": run.state.step, **values}) + "\n")


def _log_step(run: Run, bar: tqdm, loss: float) -> None:
    lr = run.scheduler.get_last_lr()[0]
    bar.update(1)
    bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", refresh=False)
    if run.state.step % run.recipe.train.logging_steps == 0:
        log(run, {"train/loss": loss, "train/lr": lr})


def loop(run: Run) -> dict | None:
    """Train to `max_steps`, evaluating and checkpointing on schedule; return the last evaluation
    when it was taken at `max_steps`."""
    t = run.recipe.train
    results = None
    batches = micro_batches(run)
    # mininterval: a few redraws a second at most, so logs of non-interactive runs stay readable.
    bar = tqdm(
        total=t.max_steps,
        initial=run.state.step,
        disable=not run.accelerator.is_main_process,
        desc="training",
        dynamic_ncols=True,
        mininterval=2.0,
    )
    while run.state.step < t.max_steps:
        run.step_start = capture_step_start(run.model)
        loss = train_step(run, batches)
        _log_step(run, bar, loss)
        if run.state.step % t.eval_steps == 0 or run.state.step == t.max_steps:
            results = periodic_eval(run)
        if run.state.step % t.save_steps == 0 or run.state.step == t.max_steps:
            checkpoint(run)
    bar.close()
    return results


def _save_on_interrupt(run: Run, reason: str, cause: BaseException | None = None) -> None:
    """Checkpoint the last completed step, with RNG and buffers as they were then, so a resume is exact; then raise.

    Raises:
        TrainingError: always, saying where the resumable checkpoint is (or why none could be written).
    """
    if run.step_start is not None:
        restore_step_start(run.model, run.step_start)
    run.optimizer.zero_grad(set_to_none=True)  # gradients of a half-done accumulation are not state
    try:
        path = checkpoint(run) if run.state.step > 0 else None
    except Exception as error:  # e.g. the disk is full: the previous checkpoints are untouched
        raise TrainingError(
            f"training {reason} at step {run.state.step}; saving a checkpoint failed too "
            f"({type(error).__name__}: {error}); resume from {_latest_name(run)}"
        ) from cause
    where = f"; saved {path}, continue with --resume latest" if path else ""
    raise TrainingError(f"training {reason} at step {run.state.step}{where}") from cause


class _Terminated(Exception):
    """SIGTERM (e.g. a scheduler's preemption), handled like Ctrl-C."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise _Terminated()


def train(recipe: Recipe, resume: str | None = None, overwrite: bool = False) -> dict:
    """Run a recipe end to end; return the final evaluation (evaluate's key names).

    Raises:
        TrainingError: output directory conflicts, resume problems, a non-finite loss, or an
            interruption (after saving a resumable checkpoint).
    """
    check_output_dir(recipe.output_dir, resume, overwrite)
    accelerator = make_accelerator(recipe)
    if accelerator.device.type == "cpu":
        # Denormal floats (small gradients, Adam moments) slow x86 CPU kernels by 10-40x: measured here.
        torch.set_flush_denormal(True)
        use_cpu_cores(accelerator.num_processes)
    check_batch_size(recipe, accelerator.num_processes)
    check_schedule(recipe)
    run = prepare_run(recipe, accelerator)
    if resume:
        restore(run, resume)
    if accelerator.is_main_process:
        recipe.output_dir.mkdir(parents=True, exist_ok=True)
        recipe.save(recipe.output_dir / "recipe.yaml")
    accelerator.init_trackers(recipe.logging.project_name, config=_tracker_config(recipe))
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        results = loop(run)
    except KeyboardInterrupt:
        _save_on_interrupt(run, "interrupted (Ctrl-C)")
    except _Terminated:
        _save_on_interrupt(run, "terminated (SIGTERM)")
    except TrainingError:
        raise  # e.g. a non-finite loss: the state is suspect, the last checkpoint stays the good one
    except Exception as error:
        _save_on_interrupt(run, f"stopped by {type(error).__name__}: {error}", error)
    finally:
        signal.signal(signal.SIGTERM, previous)
    if results is None:  # resumed from the final checkpoint: training was done, the outputs were not
        results = periodic_eval(run)
    write_outputs(run, results)
    accelerator.end_training()
    if recipe.hub.push and accelerator.is_main_process:
        from ..hub import push  # a failure raises HubError; the finished run stays in the output directory

        accelerator.print(f"pushed: {push(recipe.output_dir)}")
    return results


def _tracker_config(recipe: Recipe) -> dict:
    """Trackers take flat scalars: dotted keys, anything else as a string."""
    scalar = (int, float, str, bool, type(None))
    return {key: value if isinstance(value, scalar) else str(value) for key, value in recipe.flat().items()}


__all__ = ["Run", "make_accelerator", "train"]
