"""When a run ends: `train.max_epochs` converted to steps, and early stopping on a scripted mIoU sequence."""

from __future__ import annotations

import json

import pytest
from safetensors.torch import load_file

from segtune.errors import TrainingError
from segtune.recipe import TrainConfig
from segtune.train import train
from segtune.train.checkpoints import RunState, list_checkpoints
from segtune.train.stopping import RunLength, count_evaluation, run_length
from tests.test_train import _interrupt_at_batch, assert_same_weights, final_weights, scripted_miou, tiny_recipe

# Evaluations every 2 steps, checkpoints every 4: a new best between checkpoints is saved for early stopping.
EARLY_STOPPING = (
    "train.max_steps=12",
    "train.eval_steps=2",
    "train.save_steps=4",
    "train.early_stopping_patience=2",
    "train.early_stopping_min_delta=0.05",
)


def metrics(output_dir) -> dict:
    return json.loads((output_dir / "metrics.json").read_text())


def logged_steps(output_dir) -> list[int]:
    return [json.loads(line)["step"] for line in (output_dir / "train_log.jsonl").read_text().splitlines()]


@pytest.mark.parametrize(
    "epochs, samples, batch, processes, accumulation, steps, conversion",
    [
        (3, 512, 8, 1, 1, 192, "max_epochs 3 = 192 steps (512 samples / (8 per device x 1 process x 1 accumulation))"),
        (3, 10, 4, 1, 1, 6, "(10 samples / (4 per device x 1 process x 1 accumulation), 2 left out of each epoch"),
        (3, 10, 4, 2, 1, 3, "(10 samples / (4 per device x 2 processes x 1 accumulation), 2 left out of each epoch"),
        (3, 16, 2, 2, 3, 4, "max_epochs 3 = 4 steps"),  # 4 batches per epoch: accumulation spans epoch ends
    ],
)
def test_max_epochs_is_whole_batches_per_process_divided_by_accumulation(
    epochs, samples, batch, processes, accumulation, steps, conversion
):
    train_config = TrainConfig(max_epochs=epochs, per_device_batch_size=batch, gradient_accumulation_steps=accumulation)
    length = run_length(train_config, samples, processes)
    assert length.max_steps == steps and conversion in length.conversion
    assert run_length(TrainConfig(max_steps=7), samples, processes) == RunLength(7, None)


def test_max_epochs_that_make_no_step_are_refused():
    with pytest.raises(TrainingError, match=r"train.max_epochs=1 makes no optimizer step: max_epochs 1 = 0 steps \(3 "):
        run_length(TrainConfig(max_epochs=1, per_device_batch_size=2), 3, 2)


@pytest.mark.parametrize(
    "best, miou, counted",
    [
        (None, 0.1, 0),  # the first evaluation sets the best
        (0.3, 0.35, 0),  # a gain of min_delta counts, though 0.35 - 0.3 < 0.05 in floats
        (0.3, 0.34, 1),  # a smaller gain does not
        (0.3, 0.3, 1),
        (0.3, 0.2, 1),
    ],
)
def test_an_evaluation_counts_unless_it_gains_min_delta(best, miou, counted):
    state = RunState(best_miou=best, evals_without_gain=0)
    count_evaluation(state, miou, min_delta=0.05)
    assert state.evals_without_gain == counted
    state = RunState(best_miou=best, evals_without_gain=0)
    count_evaluation(state, miou, min_delta=0.0)  # any gain at all
    assert state.evals_without_gain == (0 if best is None or miou > best else 1)


def test_max_epochs_sets_the_step_count_and_the_schedule(tmp_path, capsys):
    out = tmp_path / "run"
    accumulate = ("train.gradient_accumulation_steps=2", "train.reference_batch_size=4")
    train(tiny_recipe(out, "train.max_steps=null", "train.max_epochs=2", *accumulate))
    # 8 samples / (2 per device x 1 process x 2 accumulation) = 2 steps per epoch
    assert "max_epochs 2 = 4 steps (8 samples / (2 per device x 1 process x 2 accumulation))" in capsys.readouterr().out
    assert metrics(out)["step"] == 4 and max(logged_steps(out)) == 4 and "stopped_early" not in metrics(out)
    last_lr = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()][-2]["train/lr"]
    assert last_lr == 0.0  # the poly schedule ends at the converted count
    assert [p.name for p in list_checkpoints(out)] == ["step-00000002", "step-00000004"]


def test_early_stopping_stops_at_the_right_evaluation_and_keeps_the_best_weights(tmp_path, monkeypatch, capsys):
    # steps 2, 4, 6, 8, then the best checkpoint's evaluation: 0.52 at step 6 is the best, but a gain of
    # only 0.02 over step 4, so steps 6 and 8 count and the run stops at step 8
    script = scripted_miou(monkeypatch, 0.3, 0.5, 0.52, 0.4, 0.52)
    out = tmp_path / "run"
    train(tiny_recipe(out, *EARLY_STOPPING))
    assert next(script, None) is None  # no evaluation after step 8
    assert max(logged_steps(out)) == 8
    assert (
        "early stopping at step 8: no mIoU gain >= 0.05 in 2 evaluations; outputs from the best checkpoint, "
        "step 6 (mIoU 0.5200)" in capsys.readouterr().out
    )
    recorded = metrics(out)
    assert (recorded["stopped_early"], recorded["stopped_early_at_step"], recorded["step"]) == (True, 8, 6)
    assert (recorded["best_step"], recorded["best_mean_iou"], recorded["mean_iou"]) == (6, 0.52, 0.52)
    # step 6 is no save step: it was saved as the new best, and rotation keeps it
    assert [p.name for p in list_checkpoints(out)] == ["step-00000006", "step-00000008"]
    best, last = (load_file(out / "checkpoints" / f"step-0000000{s}" / "model.safetensors") for s in (6, 8))
    final = final_weights(out)
    assert final.keys() == best.keys() and all(final[k].equal(best[k]) for k in final)
    assert not all(final[k].equal(last[k]) for k in final)
    # Died while writing its outputs: the resume trains no further, and writes them from the best again.
    (out / "metrics.json").unlink()
    monkeypatch.undo()
    scripted_miou(monkeypatch, 0.52)
    train(tiny_recipe(out, *EARLY_STOPPING), resume="latest")
    assert max(logged_steps(out)) == 8 and metrics(out) == recorded


def test_early_stopping_resumed_after_an_interruption_is_exact(tmp_path, monkeypatch):
    """The count (1 at the interruption) survives the resume, and the best comes after it."""
    common = (*EARLY_STOPPING, "model.drop_path_rate=0.2", "model.classifier_dropout_prob=0.2")
    with monkeypatch.context() as patch:
        scripted_miou(patch, 0.5, 0.3, 0.51, 0.51)  # stops at step 6, whose 0.51 is the best
        train(tiny_recipe(tmp_path / "straight", *common))
    with monkeypatch.context() as patch:
        scripted_miou(patch, 0.5, 0.3)
        _interrupt_at_batch(patch, 6, "ctrl-c")
        with pytest.raises(TrainingError, match=r"interrupted \(Ctrl-C\) at step 5"):
            train(tiny_recipe(tmp_path / "resumed", *common))
    interrupted = json.loads((list_checkpoints(tmp_path / "resumed")[-1] / "run_state.json").read_text())
    assert (interrupted["step"], interrupted["evals_without_gain"]) == (5, 1)
    with monkeypatch.context() as patch:
        scripted_miou(patch, 0.51, 0.51)
        train(tiny_recipe(tmp_path / "resumed", *common), resume="latest")
    for run in ("straight", "resumed"):
        assert (metrics(tmp_path / run)["stopped_early_at_step"], metrics(tmp_path / run)["step"]) == (6, 6)
    assert_same_weights(tmp_path / "straight", tmp_path / "resumed")
