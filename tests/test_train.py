"""The fine-tuning loop: outputs, exact resume, faults, and the command line."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
from collections.abc import Iterator

import datasets
import pytest
import torch
from safetensors.torch import load_file

import segtune.train.loop as loop
from segtune.commands import main
from segtune.errors import DatasetError, RecipeError, TrainingError
from segtune.evaluation import evaluate_checkpoint
from segtune.models.mix_transformer import CheckpointError, MixTransformerForSemanticSegmentation
from segtune.recipe import load_recipe
from segtune.train import train
from segtune.train.checkpoints import list_checkpoints
from segtune.train.losses import SegmentationLoss
from tests.conftest import TINY_RUN


def tiny_recipe(output_dir, *overrides: str):
    return load_recipe("demo.yaml", [*TINY_RUN, f"train.output_dir={output_dir}", *overrides])


def final_weights(output_dir) -> dict[str, torch.Tensor]:
    return load_file(output_dir / "model.safetensors")


@pytest.mark.parametrize("arch", ["mix_transformer", "segformer"])
def test_short_run_writes_every_output(tmp_path, arch):
    out = tmp_path / "run"
    results = train(tiny_recipe(out, f"model.arch={arch}"))
    names = {p.name for p in out.iterdir()}
    assert {
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
        "recipe.yaml",
        "metrics.json",
        "per_class_iou.md",
        "predictions.png",
        "checkpoints",
    } <= names
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"mean_iou", "mean_accuracy", "overall_accuracy", "per_category_iou", "per_category_accuracy"} <= set(
        metrics
    )
    assert metrics["step"] == 4 and 0 <= metrics["mean_iou"] <= 1
    assert metrics["mean_iou"] == pytest.approx(float(results["mean_iou"]))
    assert len(metrics["per_category_iou"]) == 6 and "background" in metrics["per_category_iou_by_name"]
    assert results["confusion_matrix"].sum() == 3 * 64 * 64  # every eval pixel, at native resolution
    assert [p.name for p in list_checkpoints(out)] == ["step-00000002", "step-00000004"]
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == ("mix_transformer" if arch == "mix_transformer" else "segformer")
    assert config["id2label"]["1"] == "disc"
    assert load_recipe(out / "recipe.yaml").model.arch == arch


def scripted_miou(monkeypatch, *scores: float) -> Iterator[float]:
    """Each evaluation of the loop reports the next of `scores` as its mIoU; return what is left of them."""
    script = iter(scores)
    real = loop.evaluate

    def scripted(*args, **kwargs):
        results = real(*args, **kwargs)
        results["mean_iou"] = next(script)
        return results

    monkeypatch.setattr(loop, "evaluate", scripted)
    return script


def test_checkpoints_keep_the_last_k_and_the_best(tmp_path, monkeypatch):
    scripted_miou(monkeypatch, 0.9, 0.1, 0.2, 0.3)  # best at the first evaluation
    out = tmp_path / "run"
    train(tiny_recipe(out, "train.max_steps=8", "train.save_total_limit=1"))
    assert [p.name for p in list_checkpoints(out)] == ["step-00000002", "step-00000008"]
    assert json.loads((out / "metrics.json").read_text())["best_step"] == 2


def _interrupt_at_batch(monkeypatch, batch_number: int, how: str) -> None:
    """Stop the loop when it asks for its `batch_number`-th micro-batch (1-based): Ctrl-C, or a real SIGTERM."""
    real = loop.micro_batches

    def interrupted(run):
        for count, batch in enumerate(real(run), start=1):
            if count == batch_number:
                if how == "ctrl-c":
                    raise KeyboardInterrupt
                os.kill(os.getpid(), signal.SIGTERM)  # the handler raises here, in the main thread
            yield batch

    monkeypatch.setattr(loop, "micro_batches", interrupted)


@pytest.mark.parametrize(
    "overrides, batch_number, how",
    [
        ((), 4, "ctrl-c"),  # between checkpoints: step 3 saved on interrupt
        (("train.gradient_accumulation_steps=2", "train.reference_batch_size=4"), 6, "ctrl-c"),  # mid-accumulation
        (("train.gradient_accumulation_steps=2", "train.reference_batch_size=4"), 6, "sigterm"),  # a preemption
        (("train.max_steps=null", "train.max_epochs=2"), 6, "ctrl-c"),  # 8 steps; stopped in the second epoch
    ],
)
def test_interrupted_and_resumed_run_ends_with_the_same_weights(tmp_path, monkeypatch, overrides, batch_number, how):
    common = ("train.max_steps=6", "model.drop_path_rate=0.2", "model.classifier_dropout_prob=0.2", *overrides)
    train(tiny_recipe(tmp_path / "straight", *common))

    with monkeypatch.context() as patch:
        _interrupt_at_batch(patch, batch_number, how)
        reason = r"interrupted \(Ctrl-C\)" if how == "ctrl-c" else r"terminated \(SIGTERM\)"
        with pytest.raises(TrainingError, match=rf"{reason} at step \d.*--resume latest"):
            train(tiny_recipe(tmp_path / "resumed", *common))
    assert list_checkpoints(tmp_path / "resumed")[-1].name != "step-00000006"
    train(tiny_recipe(tmp_path / "resumed", *common), resume="latest")

    straight, resumed = final_weights(tmp_path / "straight"), final_weights(tmp_path / "resumed")
    assert straight.keys() == resumed.keys()
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key


def _nan_at_call(monkeypatch, call: int) -> None:
    calls = {"n": 0}
    real = MixTransformerForSemanticSegmentation.loss

    def loss_turning_nan(self, logits, labels):
        calls["n"] += 1
        value = real(self, logits, labels)
        return value * float("nan") if calls["n"] == call else value

    monkeypatch.setattr(MixTransformerForSemanticSegmentation, "loss", loss_turning_nan)


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    _nan_at_call(monkeypatch, 3)
    out = tmp_path / "run"
    with pytest.raises(TrainingError, match=r"loss was NaN or infinite at step 3: stopping at step 3.*step-00000002"):
        train(tiny_recipe(out))
    assert [p.name for p in list_checkpoints(out)] == ["step-00000002"]
    assert not (out / "metrics.json").exists() and not (out / "model.safetensors").exists()


def test_non_finite_loss_between_logging_steps_is_never_checkpointed(tmp_path, monkeypatch):
    """The loss is read back only at logging steps; a checkpoint due before the next one checks first."""
    _nan_at_call(monkeypatch, 3)
    out = tmp_path / "run"
    recipe = tiny_recipe(out, "train.max_steps=8", "train.logging_steps=8", "train.eval_steps=8", "train.save_steps=4")
    with pytest.raises(TrainingError, match=r"loss was NaN or infinite at step 3: stopping at step 4"):
        train(recipe)
    assert list_checkpoints(out) == [] and not (out / "model.safetensors").exists()


def test_failed_checkpoint_write_never_touches_the_previous_one(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    real = loop.Accelerator.save_state
    calls = {"n": 0}

    def failing_save(self, output_dir=None, **kwargs):
        calls["n"] += 1
        if calls["n"] >= 2:
            (loop.Path(output_dir) / "model.safetensors").write_bytes(b"partial")
            raise OSError("No space left on device")
        return real(self, output_dir, **kwargs)

    monkeypatch.setattr(loop.Accelerator, "save_state", failing_save)
    with pytest.raises(OSError, match="No space left on device"):  # the original error, with its traceback
        train(tiny_recipe(out))
    assert re.search(
        r"stopped at step 4 by OSError; saving a checkpoint failed too.*step-00000002", capsys.readouterr().err
    )
    [kept] = list_checkpoints(out)
    assert kept.name == "step-00000002" and len(load_file(kept / "model.safetensors")) > 0
    assert not list(kept.parent.glob(".tmp-*"))  # each failed write removed its staging folder


def test_resume_with_another_recipe_is_refused_naming_the_keys(tmp_path):
    out = tmp_path / "run"
    train(tiny_recipe(out, "train.max_steps=2"))
    with pytest.raises(TrainingError, match=r"different recipe:\n  optim.lr: checkpoint 0.001, now 0.002"):
        train(tiny_recipe(out, "train.max_steps=2", "optim.lr=2e-3"), resume="latest")
    # Settings that do not change the weights may differ.
    train(tiny_recipe(out, "train.max_steps=2", "train.logging_steps=5", "eval.num_visualizations=1"), resume="latest")


def test_output_directory_of_a_finished_run_is_protected(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--recipe", "demo.yaml", "--output_dir", str(out), "--set", *TINY_RUN, "train.max_steps=2"]
    assert main(args) == 0
    assert main(args) == 1
    assert "already holds a finished run" in capsys.readouterr().err
    assert main([*args, "--overwrite"]) == 0


def test_command_line_errors_are_clear(capsys):
    assert main(["train", "--recipe", "nope.yaml"]) == 1
    assert "recipe 'nope.yaml' not found" in capsys.readouterr().err
    assert main(["train", "--recipe", "demo.yaml", "--set", "optim.lr=-1"]) == 1
    assert "optim.lr: expected positive, found -1.0" in capsys.readouterr().err


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and r.name.startswith("segtune")]


def test_recipe_warnings_come_only_after_the_errors_that_stop_a_run(tmp_path, caplog):
    warned = ["optim.warmup_steps=5", "train.max_steps=2", "train.reference_batch_size=8"]  # warmup never ends
    no_data, no_model = tmp_path / "no_such_folder", tmp_path / "no_such_model"
    caplog.set_level(logging.WARNING)
    with pytest.raises(DatasetError, match=rf"data.path {str(no_data)!r}: folder not found"):
        train(tiny_recipe(tmp_path / "a", *warned, "data.source=folder", f"data.path={no_data}"))
    with pytest.raises(CheckpointError, match=rf"model.init_from={str(no_model)!r}: no config.json found"):
        train(tiny_recipe(tmp_path / "b", *warned, "model.init=pretrained", f"model.init_from={no_model}"))
    assert _warnings(caplog) == []
    train(tiny_recipe(tmp_path / "c", *warned))  # valid data and model: the warnings still come
    assert _warnings(caplog) == [
        "effective batch 2 (1 processes x 2 per device x 1 accumulation) differs from the recipe's reference batch 8; "
        "the recipe's learning rate was set for 8",
        "optim.warmup_steps=5 >= train.max_steps=2: the learning rate only warms up in this run",
    ]


def test_a_recipe_edited_in_python_is_validated_before_training(tmp_path):
    recipe = tiny_recipe(tmp_path / "run")
    recipe.model.variant = "mit-b9"
    with pytest.raises(RecipeError, match=r"model.variant: expected one of \['mit-b0', .*'mit-b5'\], found 'mit-b9'"):
        train(recipe)
    assert not (tmp_path / "run").exists()


def test_bf16_autocast_with_gradient_clipping_and_accumulation(tmp_path):
    out = tmp_path / "run"
    results = train(
        tiny_recipe(
            out,
            "train.mixed_precision=bf16",
            "train.max_grad_norm=1.0",
            "train.gradient_accumulation_steps=2",
            "train.reference_batch_size=4",
        )
    )
    assert 0 <= float(results["mean_iou"]) <= 1
    assert {str(t.dtype) for t in final_weights(out).values()} == {
        "torch.float32",
        "torch.int64",
    }  # fp32 master weights
    # a notebook evaluating, in the same process, at another precision than it trained with
    results, _ = evaluate_checkpoint(str(out), tiny_recipe(out))
    assert 0 <= float(results["mean_iou"]) <= 1


@pytest.mark.parametrize(
    ("device", "overrides", "expected"),
    [
        ("cpu", [], (False, False)),  # CPU: compiling would cost more than it saves
        ("cuda", [], (True, True)),  # the paper's 160k steps on a GPU
        ("cuda", ["train.max_steps=1000"], (False, False)),  # a short run
        ("mps", [], (False, False)),
        ("cpu", ["train.compile=true"], (True, True)),  # asked for
        ("cuda", ["eval.compile=false"], (True, False)),
        ("cuda", ["train.compile=false", "eval.compile=true"], (False, True)),
    ],
)
def test_compile_auto_is_on_for_long_gpu_runs_only(device, overrides, expected):
    assert (load_recipe("cityscapes.yaml").train.compile, load_recipe("demo.yaml").eval.compile) == ("auto", "auto")
    assert loop.compiles(load_recipe("cityscapes.yaml", overrides), torch.device(device)) == expected


def test_the_loss_is_read_back_only_at_logging_evaluation_and_checkpoint_steps(tmp_path, monkeypatch):
    """Between those steps nothing of the loss comes back from the device: the CPU never waits for the GPU."""
    steps, reads = [0], []
    real_step, real_mean, real_bad = loop.train_step, loop.LossMeter.mean, loop.LossMeter.bad_step

    def counted_step(run, batches):
        real_step(run, batches)
        steps[0] = run.state.step

    monkeypatch.setattr(loop, "train_step", counted_step)
    monkeypatch.setattr(loop.LossMeter, "mean", lambda self: reads.append(steps[0]) or real_mean(self))
    monkeypatch.setattr(loop.LossMeter, "bad_step", lambda self: reads.append(steps[0]) or real_bad(self))
    overrides = ["train.max_steps=9", "train.logging_steps=4", "train.eval_steps=6", "train.save_steps=9"]
    train(tiny_recipe(tmp_path / "run", *overrides))
    assert steps == [9] and sorted(set(reads)) == [4, 6, 8, 9]


# Evaluations every 2 steps, a checkpoint every 4, DataLoader workers (persistent, as in real runs), dropout.
AFTER_EVAL = (
    "train.max_steps=8",
    "train.eval_steps=2",
    "train.save_steps=4",
    "data.num_workers=1",
    "model.drop_path_rate=0.2",
    "model.classifier_dropout_prob=0.2",
)


def assert_same_weights(a, b) -> None:
    first, second = final_weights(a), final_weights(b)
    assert first.keys() == second.keys()
    for key in first:
        assert torch.equal(first[key], second[key]), key


def test_resume_from_a_checkpoint_taken_after_an_evaluation_is_exact(tmp_path):
    train(tiny_recipe(tmp_path / "straight", *AFTER_EVAL))
    resumed = tmp_path / "resumed" / "checkpoints" / "step-00000004"
    shutil.copytree(tmp_path / "straight" / "checkpoints" / "step-00000004", resumed)
    train(tiny_recipe(tmp_path / "resumed", *AFTER_EVAL), resume=str(resumed))
    assert_same_weights(tmp_path / "straight", tmp_path / "resumed")


def test_interruption_after_an_evaluation_then_resume_is_exact(tmp_path, monkeypatch):
    train(tiny_recipe(tmp_path / "straight", *AFTER_EVAL))
    with monkeypatch.context() as patch:
        _interrupt_at_batch(patch, 6, "ctrl-c")  # after the evaluations at steps 2 and 4: step 5 saved
        with pytest.raises(TrainingError, match=r"interrupted \(Ctrl-C\) at step 5"):
            train(tiny_recipe(tmp_path / "resumed", *AFTER_EVAL))
    train(tiny_recipe(tmp_path / "resumed", *AFTER_EVAL), resume="latest")
    assert_same_weights(tmp_path / "straight", tmp_path / "resumed")


def test_resume_of_a_finished_run_says_so_and_rewrites_nothing(tmp_path, caplog):
    out = tmp_path / "run"
    first = train(tiny_recipe(out, "train.max_steps=2"))
    written = {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.is_file()}
    with caplog.at_level(logging.INFO, logger="segtune"):
        again = train(tiny_recipe(out, "train.max_steps=2"), resume="latest")
    assert f"{out} already holds a finished run (step 2, mIoU {float(first['mean_iou']):.4f})" in caplog.text
    assert "nothing to resume" in caplog.text and "resumed from" not in caplog.text
    assert again["mean_iou"] == pytest.approx(float(first["mean_iou"]))
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.is_file()} == written


def test_resume_with_a_loss_section_is_exact(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache")  # class pixels are counted anew
    calls = []
    real = SegmentationLoss.forward
    monkeypatch.setattr(SegmentationLoss, "forward", lambda self, *a: calls.append(1) or real(self, *a))
    common = (
        "train.max_steps=6",
        "model.drop_path_rate=0.2",
        "model.classifier_dropout_prob=0.2",
        "loss.terms=[ce, {name: dice, weight: 0.5}]",
        "loss.class_weights=auto",
    )
    train(tiny_recipe(tmp_path / "straight", *common))
    assert len(calls) == 6 and "loss.class_weights: auto" in capsys.readouterr().out
    with monkeypatch.context() as patch:
        _interrupt_at_batch(patch, 4, "ctrl-c")
        with pytest.raises(TrainingError, match=r"interrupted \(Ctrl-C\) at step 3"):
            train(tiny_recipe(tmp_path / "resumed", *common))
    train(tiny_recipe(tmp_path / "resumed", *common), resume="latest")
    assert capsys.readouterr().out.count("(read from the cache:") == 2  # counted once, by the straight run
    assert_same_weights(tmp_path / "straight", tmp_path / "resumed")
