"""The fine-tuning loop, on Accelerate: prepare, then per step accumulate, backward, step, log; evaluate
and save on schedule.

One CPU, one GPU, DDP over several GPUs or machines: whatever `accelerate launch` sets up. Nothing
here spawns processes or talks to other ranks except through Accelerate. Per step, nothing is read
back from the GPU (see `tracking.py`): the CPU queues the next step while the GPU runs this one.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator, DataLoaderConfiguration
from accelerate.utils import GradientAccumulationPlugin, ProjectConfiguration, set_seed
from torch.utils.data import DataLoader

from .. import run_dir
from ..compat import reset_accelerate_state, set_accumulation_counter
from ..data import SegmentationData, build_datasets, make_loader
from ..errors import TrainingError
from ..evaluation import evaluate
from ..models.build import build_model
from ..models.lora import is_lora, trainable_summary
from ..recipe import Recipe, recipe_warnings, validate
from .agreement import on_main
from .checkpoints import (
    RunState,
    check_same_recipe,
    last_good_checkpoint,
    load_checkpoint,
    resolve_resume,
    rotate_checkpoints,
    save_checkpoint,
)
from .criterion import build_criterion
from .disk_space import state_bytes
from .interrupts import StepSnapshot, sigterm_raises, stop
from .losses import SegmentationLoss
from .optim import build_optimizer, build_scheduler
from .output_dir import check_output_dir, finished_results
from .outputs import write_outputs
from .sampler import EpochSampler
from .stopping import (
    RunLength,
    best_checkpoint,
    check_resumed_length,
    count_evaluation,
    early_stopping_line,
    run_length,
    saves_new_best,
    stops_early,
)
from .threads import tune_cpu
from .tracking import LossMeter, TrainLog

logger = logging.getLogger(__name__)

# train.compile=auto compiles CUDA runs of at least this many steps: compiling costs a fixed time up front
# and saves a little on every step, so shorter runs would lose time (the README has the measurements).
COMPILE_MIN_STEPS = 5_000


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
    losses: LossMeter
    eval_model: torch.nn.Module  # `model` uncompiled, or compiled with dynamic shapes (eval.compile)
    length: RunLength  # max_steps, converted from train.max_epochs when that is set
    state: RunState = field(default_factory=RunState)
    snapshot: StepSnapshot | None = None  # RNG and buffers at the last step boundary, for an exact stop
    criterion: SegmentationLoss | None = None  # the recipe's loss section; None: the model's own loss


def compiles(recipe: Recipe, device: torch.device, max_steps: int | None = None) -> tuple[bool, bool]:
    """Whether `train.compile` and `eval.compile` (true, false or auto) compile training and evaluation on `device`,
    for a run of `max_steps` steps (None: `train.max_steps`)."""
    max_steps = recipe.train.max_steps if max_steps is None else max_steps
    auto = device.type == "cuda" and max_steps >= COMPILE_MIN_STEPS
    train = auto if recipe.train.compile == "auto" else bool(recipe.train.compile)
    return train, train if recipe.eval.compile == "auto" else bool(recipe.eval.compile)


def make_accelerator(recipe: Recipe) -> Accelerator:
    """Accelerator for this recipe: precision, accumulation, trackers, torch.compile."""
    trackers = [t for t in recipe.logging.report_to if t != "none"]
    reset_accelerate_state()
    return Accelerator(
        mixed_precision=recipe.train.mixed_precision,
        # Accumulate by count only: syncing early at each epoch's end would put two optimizer steps in
        # one of ours, and epochs here are an accident of the split size.
        gradient_accumulation_plugin=GradientAccumulationPlugin(
            num_steps=recipe.train.gradient_accumulation_steps, sync_with_dataloader=False
        ),
        log_with=trackers or None,
        project_config=ProjectConfiguration(
            project_dir=str(recipe.output_dir), logging_dir=str(recipe.output_dir / run_dir.TRACKER_DIR)
        ),
        # The schedule counts optimizer steps; Accelerate must not advance it once per process.
        step_scheduler_with_optimizer=False,
        # non_blocking: pinned batches are copied to the GPU while it still computes.
        dataloader_config=DataLoaderConfiguration(even_batches=True, non_blocking=True),
        # train.compile decides (`prepare_run`), whatever `accelerate launch --dynamo_backend` says.
        dynamo_backend="no",
    )


def make_loaders(data: SegmentationData, recipe: Recipe) -> tuple[DataLoader, DataLoader]:
    """Training loader over `EpochSampler` keys, and the evaluation loader.

    Each has a generator of its own. A DataLoader draws its workers' base seed whenever an iterator is made,
    from its generator, else from the global RNG that dropout draws from. The evaluation loader's persistent
    workers make one iterator, at the first evaluation of a process: after a resume that comes at another
    step than in a straight run, and a draw from the global RNG there would shift every dropout mask after it.
    """
    workers, seed = recipe.data.num_workers, recipe.train.seed
    train = make_loader(
        data.train,
        recipe.train.per_device_batch_size,
        workers,
        sampler=EpochSampler(len(data.train), seed),
        drop_last=True,  # equal batches: BatchNorm statistics and the schedule stay comparable
        generator=torch.Generator().manual_seed(seed),
    )
    evaluation = make_loader(data.eval, recipe.eval.batch_size, workers, generator=torch.Generator().manual_seed(seed))
    return train, evaluation


def prepare_run(recipe: Recipe, accelerator: Accelerator) -> Run:
    """Data, model, optimizer and schedule, prepared by Accelerate."""
    set_seed(recipe.train.seed, device_specific=True)
    with accelerator.main_process_first():
        data = build_datasets(recipe, accelerator.print)
        # `loss.class_weights: auto` counts on the main process first; the others then read its cache.
        criterion = build_criterion(recipe, data, accelerator.device, accelerator.print)
    data.preprocess.to(accelerator.device)  # its mean and std, once
    model = build_model(recipe.model, data.labels.id2label, data.labels.ignore_index)
    if is_lora(model):
        accelerator.print(trainable_summary(model))
    if accelerator.num_processes > 1 and accelerator.device.type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    optimizer = build_optimizer(model, recipe.optim)
    length = run_length(recipe.train, len(data.train), accelerator.num_processes)
    scheduler = build_scheduler(optimizer, recipe.optim, length.max_steps)
    train_loader, eval_loader = make_loaders(data, recipe)
    model, optimizer, scheduler, train_loader, eval_loader = accelerator.prepare(
        model, optimizer, scheduler, train_loader, eval_loader
    )
    # Evaluation goes through DDP's wrapper, which gives every process the main process's BatchNorm
    # statistics (plain BatchNorm on CPU keeps per-process ones).
    eval_model = model
    compile_train, compile_eval = compiles(recipe, accelerator.device, length.max_steps)
    # As Accelerate's own dynamo option: last, so checkpoints hold the uncompiled module's keys.
    if compile_train:
        model = torch.compile(model, dynamic=False)  # training crops are all crop_size: one static graph
    if compile_eval:
        eval_model = torch.compile(eval_model, dynamic=True)  # one graph for every image size
    losses = LossMeter(accelerator.device)
    parts = (model, optimizer, scheduler, train_loader, eval_loader, losses, eval_model, length)
    return Run(recipe, accelerator, data, *parts, criterion=criterion)


def restore(run: Run, resume: str) -> None:
    """Load a checkpoint into the prepared run, refusing a damaged one or one trained with another recipe."""
    # Checked once, by the main process: every process loading the same files would read them all N times.
    checkpoint = on_main(run.accelerator, lambda: resolve_resume(run.recipe.output_dir, resume))
    check_same_recipe(checkpoint, run.recipe)
    run.state = load_checkpoint(run.accelerator, checkpoint)
    check_resumed_length(run.state, run.length, checkpoint)
    # A checkpoint written mid-accumulation (on Ctrl-C) must not shift when accumulation syncs.
    set_accumulation_counter(run.accelerator, run.state.step * run.recipe.train.gradient_accumulation_steps)
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


def compute_loss(run: Run, pixel_values: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The model's own loss (cross-entropy), or the recipe's loss section on the model's logits."""
    if run.criterion is None:
        return run.model(pixel_values=pixel_values, labels=labels).loss
    return run.criterion(run.model(pixel_values=pixel_values).logits, labels)


def train_step(run: Run, batches: Iterator[dict]) -> None:
    """One optimizer step over `gradient_accumulation_steps` micro-batches; the loss stays on the device."""
    accelerator, model = run.accelerator, run.model
    for _ in range(run.recipe.train.gradient_accumulation_steps):
        pixel_values, labels = run.data.preprocess(next(batches))
        with accelerator.accumulate(model):
            loss = compute_loss(run, pixel_values, labels)
            accelerator.backward(loss)
            if accelerator.sync_gradients and run.recipe.train.max_grad_norm:
                accelerator.clip_grad_norm_(model.parameters(), run.recipe.train.max_grad_norm)
            run.optimizer.step()
            run.optimizer.zero_grad(set_to_none=True)
        run.losses.add(loss, run.state.step + 1)
    run.scheduler.step()
    run.state.step += 1


def latest_checkpoint(run: Run) -> str:
    """The checkpoint to resume from, for messages: the newest good one."""
    last_good = last_good_checkpoint(run.recipe.output_dir)
    return str(last_good) if last_good else "none (no checkpoint was written yet)"


def check_finite(run: Run) -> None:
    """Raises TrainingError when a loss since the start was NaN or infinite (reads one value back)."""
    bad = run.losses.bad_step()
    if bad is not None:
        raise TrainingError(
            f"the loss was NaN or infinite at step {bad}: stopping at step {run.state.step}, without saving "
            f"(the weights are no longer finite). Lower optim.lr or set train.max_grad_norm; the last good "
            f"checkpoint is {latest_checkpoint(run)}"
        )


def checkpoint(run: Run) -> Path:
    """Save the state of the current step and drop checkpoints beyond the kept ones."""
    check_finite(run)
    first_size = functools.partial(state_bytes, run.model, run.optimizer)  # about the first checkpoint's size
    path = save_checkpoint(run.accelerator, run.recipe.output_dir, run.state, run.recipe, first_size)
    if run.accelerator.is_main_process:
        rotate_checkpoints(run.recipe.output_dir, run.recipe.train.save_total_limit, run.state.best_step)
    return path


def periodic_eval(run: Run, log: TrainLog) -> dict:
    """Evaluate, log, and track the best mIoU."""
    check_finite(run)
    results = evaluate(run.eval_model, run.eval_loader, run.accelerator, run.data.labels, run.recipe.eval)
    miou = float(results["mean_iou"])
    count_evaluation(run.state, miou, run.recipe.train.early_stopping_min_delta)
    if run.state.best_miou is None or miou > run.state.best_miou:
        run.state.best_miou, run.state.best_step = miou, run.state.step
    scores = {f"eval/{key}": float(results[key]) for key in ("mean_iou", "mean_accuracy", "overall_accuracy")}
    log.log(scores, run.state.step)
    log.print(f"step {run.state.step}: mIoU {miou:.4f} (best {run.state.best_miou:.4f} at step {run.state.best_step})")
    return results


def report(run: Run, log: TrainLog) -> None:
    """At logging steps: the mean loss and the learning rate (the one place a step reads the GPU back)."""
    log.advance()
    if run.state.step % run.recipe.train.logging_steps == 0:
        check_finite(run)
        log.log({"train/loss": run.losses.mean(), "train/lr": run.scheduler.get_last_lr()[0]}, run.state.step)


def loop(run: Run, log: TrainLog) -> dict | None:
    """Train to `max_steps`, or until early stopping runs out of patience, evaluating and checkpointing on
    schedule; return the last evaluation when it was taken at `max_steps`."""
    t, max_steps = run.recipe.train, run.length.max_steps
    results, batches = None, micro_batches(run)
    while run.state.step < max_steps and not stops_early(t, run.state):
        run.snapshot = StepSnapshot.capture(run.model, run.accelerator.device)
        train_step(run, batches)
        report(run, log)
        last = run.state.step == max_steps
        if run.state.step % t.eval_steps == 0 or last:
            results = periodic_eval(run, log)
        if run.state.step % t.save_steps == 0 or last or saves_new_best(t, run.state):
            log.print(f"step {run.state.step}: saved {checkpoint(run)}")
    return results


def restore_best(run: Run) -> dict:
    """After early stopping: load the best checkpoint, say so, and return its evaluation (the outputs').

    Raises:
        TrainingError: the best checkpoint is not on disk.
    """
    load_checkpoint(run.accelerator, best_checkpoint(run.recipe.output_dir, run.state))
    run.accelerator.print(early_stopping_line(run.recipe.train, run.state))
    return evaluate(run.eval_model, run.eval_loader, run.accelerator, run.data.labels, run.recipe.eval)


def save_resumable(run: Run) -> Path | None:
    """The checkpoint of the last completed step, RNG and buffers as they were then (None before step 1)."""
    if run.snapshot is not None:
        run.snapshot.restore(run.model, run.accelerator.device)
    run.optimizer.zero_grad(set_to_none=True)  # gradients of a half-done accumulation are not state
    return checkpoint(run) if run.state.step > 0 else None


def train(recipe: Recipe, resume: str | None = None, overwrite: bool = False) -> dict:
    """Run a recipe end to end; return the final evaluation (evaluate's key names). With `resume` on a finished
    run there is nothing to do: it says so and returns the run's recorded `metrics.json`.

    Raises:
        TrainingError: output directory conflicts, resume problems, a non-finite loss, or an
            interruption (after saving a resumable checkpoint).
        RecipeError: the recipe is invalid (a loaded recipe edited in Python, say).
        DatasetError, CheckpointError: the data or the initial weights cannot be read.
        Any other exception: unchanged, after saving a resumable checkpoint.
    """
    validate(recipe)
    if resume and not overwrite and run_dir.is_finished(recipe.output_dir):
        check_same_recipe(resolve_resume(recipe.output_dir, resume, checksums=False), recipe)
        return finished_results(recipe.output_dir)
    check_output_dir(recipe.output_dir, resume, overwrite)
    accelerator = make_accelerator(recipe)
    if accelerator.device.type == "cpu":
        tune_cpu(accelerator.num_processes)
    run = prepare_run(recipe, accelerator)
    if resume:
        restore(run, resume)
    run.state.max_steps = run.length.max_steps  # kept in checkpoints: a resume must count the same
    # Warned only once the checks that can refuse the run (output directory, data, model, resume) have
    # passed: no warning comes before the error that stops a run.
    if run.length.conversion:
        accelerator.print(run.length.conversion)
    for warning in recipe_warnings(recipe, accelerator.num_processes, run.length.max_steps) + run.data.warnings:
        logger.warning(warning)
    if accelerator.is_main_process:
        recipe.output_dir.mkdir(parents=True, exist_ok=True)
        recipe.save(recipe.output_dir / run_dir.RECIPE)
    accelerator.init_trackers(recipe.logging.project_name, config=_tracker_config(recipe))
    log = TrainLog(accelerator, recipe.output_dir, run.length.max_steps, run.state.step)
    with sigterm_raises():
        try:
            results = loop(run, log)
        except TrainingError:
            raise  # a non-finite loss: the state is suspect, the last checkpoint stays the good one
        except (Exception, KeyboardInterrupt) as error:
            stop(error, run.state.step, lambda: save_resumable(run), lambda: latest_checkpoint(run))
        finally:
            log.close()
    if stops_early(recipe.train, run.state):
        results = restore_best(run)
    elif results is None:  # resumed from the final checkpoint: training was done, the outputs were not
        results = periodic_eval(run, log)
    model = accelerator.unwrap_model(run.model, keep_torch_compile=False)
    write_outputs(accelerator, model, run.data, recipe, run.state, results)
    accelerator.end_training()
    if recipe.hub.push and accelerator.is_main_process:
        from ..hub import push  # a failure raises HubError; the finished run stays in the output directory

        accelerator.print(f"pushed: {push(recipe.output_dir)}")
    return results


def _tracker_config(recipe: Recipe) -> dict:
    """Trackers take flat scalars: dotted keys, anything else as a string."""
    scalar = (int, float, str, bool, type(None))
    return {key: value if isinstance(value, scalar) else str(value) for key, value in recipe.flat().items()}


__all__ = ["COMPILE_MIN_STEPS", "Run", "compiles", "make_accelerator", "train"]
