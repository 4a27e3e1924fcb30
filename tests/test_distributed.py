"""Real launches: two CPU processes through `accelerate launch`, and a run killed with SIGKILL then resumed."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch
from safetensors.torch import load_file

import segtune
from segtune.errors import TrainingError
from segtune.evaluation import evaluate_checkpoint
from segtune.recipe import load_recipe
from segtune.train import train
from tests.conftest import TINY_RUN
from tests.faults import FINETUNE_ON_A_FULL_DISK, no_space_line

FINETUNE = str(Path(segtune.__file__).resolve().parent / "finetune.py")


def _env(**extra: str) -> dict[str, str]:
    # One thread per process: two processes share this machine's two cores. PYTHONPATH names the segtune
    # under test, which may not be the installed one (a checkout next to an editable install).
    environment = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return {**environment, "PYTHONPATH": str(Path(FINETUNE).parents[1]), "OMP_NUM_THREADS": "1", **extra}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch_two(*finetune_args: str) -> list[str]:
    """`accelerate launch` of `segtune/finetune.py` with `finetune_args` on two CPU processes.

    accelerate's `--cpu` launcher starts several processes only through mpirun; torchrun (`--multi_gpu`) with
    ACCELERATE_USE_CPU starts them here, and Accelerate joins them over gloo (MULTI_CPU).
    """
    return [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(_free_port()),
        *finetune_args,
    ]


TWO_CPU = {"ACCELERATE_USE_CPU": "true"}


def _two_processes(*finetune_args: str, returncode: int = 0) -> subprocess.CompletedProcess:
    """`_launch_two(*finetune_args)` run to its end; asserts it ends with `returncode` (success by default)."""
    result = subprocess.run(
        _launch_two(*finetune_args), env=_env(**TWO_CPU), capture_output=True, text=True, timeout=600
    )
    assert result.returncode == returncode, result.stderr[-3000:]
    return result


@pytest.mark.slow
def test_two_cpu_processes_score_every_eval_pixel_once(tmp_path):
    out = tmp_path / "run"
    result = _two_processes(*_finetune_args(out, "data.synthetic.num_eval=5", "train.max_steps=2"))
    distributed = json.loads((out / "metrics.json").read_text())
    # 5 eval scenes over 2 processes: Accelerate repeats one to even out the batches; it must not count.
    single, _ = evaluate_checkpoint(str(out), load_recipe(out / "recipe.yaml"))
    assert torch.tensor(distributed["confusion_matrix"]).sum() == 5 * 64 * 64
    assert distributed["confusion_matrix"] == single["confusion_matrix"].tolist()
    assert distributed["mean_iou"] == pytest.approx(float(single["mean_iou"]))
    assert "effective batch 4 (2 processes x 2 per device x 1 accumulation) differs" in result.stderr
    assert "Grad strides do not match bucket view strides" not in result.stderr  # DDP buckets need no copies


def _finetune_args(out: Path, *overrides: str) -> list[str]:
    """`segtune/finetune.py` and its arguments for a tiny demo run into `out`."""
    return [FINETUNE, "--recipe", "demo.yaml", "--output_dir", str(out), "--set", *TINY_RUN, *overrides]


def _finetune(out: Path, *flags: str) -> list[str]:
    """A 10-step run of 128 px scenes, long enough to be killed between checkpoints."""
    overrides = (
        "data.synthetic.image_size=128",
        "augment.scale=[128,128]",
        "augment.crop_size=128",
        "train.max_steps=10",
    )
    return [sys.executable, *_finetune_args(out, *overrides), *flags]


@pytest.mark.slow
def test_killed_after_a_checkpoint_then_resumed_equals_a_straight_run(tmp_path):
    straight = subprocess.run(_finetune(tmp_path / "straight"), env=_env(), capture_output=True, text=True, timeout=600)
    assert straight.returncode == 0, straight.stderr[-3000:]

    out = tmp_path / "killed"
    process = subprocess.Popen(_finetune(out), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first = out / "checkpoints" / "step-00000002" / "run_state.json"
    deadline = time.monotonic() + 300
    while not first.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL and not (out / "metrics.json").exists()

    resumed = subprocess.run(
        _finetune(out, "--resume"),
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stdout
    a, b = load_file(tmp_path / "straight" / "model.safetensors"), load_file(out / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_two_processes_resumed_after_an_evaluation_equal_a_straight_run(tmp_path):
    """Evaluations every 2 steps with persistent DataLoader workers; resumed from the step-4 checkpoint."""
    overrides = (
        "train.max_steps=8",
        "train.eval_steps=2",
        "train.save_steps=4",
        "data.num_workers=1",
        "model.drop_path_rate=0.2",
        "model.classifier_dropout_prob=0.2",
    )
    _two_processes(*_finetune_args(tmp_path / "straight", *overrides))
    checkpoint = tmp_path / "resumed" / "checkpoints" / "step-00000004"
    shutil.copytree(tmp_path / "straight" / "checkpoints" / "step-00000004", checkpoint)
    resumed = _two_processes(*_finetune_args(tmp_path / "resumed", *overrides), "--resume", str(checkpoint))
    assert f"resumed from {checkpoint} at step 4" in resumed.stdout
    a, b = load_file(tmp_path / "straight" / "model.safetensors"), load_file(tmp_path / "resumed" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# A 10-step run of 128 px scenes, evaluated every 2 steps with a persistent DataLoader worker, saved every 4.
EVALUATED = (
    "data.synthetic.image_size=128",
    "augment.scale=[128,128]",
    "augment.crop_size=128",
    "train.max_steps=10",
    "train.eval_steps=2",
    "train.save_steps=4",
    "data.num_workers=1",
    "model.drop_path_rate=0.2",
)


def _stop_after_first_checkpoint(command: list[str], out: Path, sig: int, **env: str) -> subprocess.CompletedProcess:
    """Start `command`, and once `out` holds its step-4 checkpoint (after two evaluations), send `sig` to the
    whole job, as a scheduler does: the launcher, the training processes (torchrun starts them in sessions
    of their own) and their DataLoader workers alike."""
    process = subprocess.Popen(command, env=_env(**env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = out / "checkpoints" / "step-00000004" / "run_state.json"
    deadline = time.monotonic() + 300
    while not first.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    job = psutil.Process(process.pid)
    for member in [job, *job.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):  # a DataLoader worker may have just exited
            member.send_signal(sig)
    stdout, stderr = process.communicate(timeout=300)
    assert not (out / "metrics.json").exists()
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def _same_final_weights(a: Path, b: Path) -> bool:
    first, second = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    return first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


@pytest.mark.slow
def test_sigterm_to_the_process_group_after_an_evaluation_saves_and_resumes_exactly(tmp_path):
    """A scheduler's SIGTERM reaches the DataLoader workers too: still one line, and an exact resume."""
    command = [sys.executable, *_finetune_args(tmp_path / "straight", *EVALUATED)]
    assert subprocess.run(command, env=_env(), capture_output=True, timeout=600).returncode == 0
    out = tmp_path / "stopped"
    stopped = _stop_after_first_checkpoint([sys.executable, *_finetune_args(out, *EVALUATED)], out, signal.SIGTERM)
    assert stopped.returncode == 1, stopped.stderr[-3000:]
    assert re.search(
        r"^error: training terminated \(SIGTERM\) at step \d+; saved \S+, continue with", stopped.stderr, re.M
    )
    assert "Traceback" not in stopped.stderr, stopped.stderr[-4000:]
    resumed = subprocess.run(
        [sys.executable, *_finetune_args(out, *EVALUATED), "--resume"], env=_env(), capture_output=True, timeout=600
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert _same_final_weights(tmp_path / "straight", out)


@pytest.mark.slow
def test_two_processes_killed_after_an_evaluation_then_resumed_equal_a_straight_run(tmp_path):
    _two_processes(*_finetune_args(tmp_path / "straight", *EVALUATED))
    out = tmp_path / "killed"
    killed = _stop_after_first_checkpoint(_launch_two(*_finetune_args(out, *EVALUATED)), out, signal.SIGKILL, **TWO_CPU)
    assert killed.returncode == -signal.SIGKILL
    _two_processes(*_finetune_args(out, *EVALUATED), "--resume")
    assert _same_final_weights(tmp_path / "straight", out)


@pytest.mark.slow
def test_two_processes_stop_together_on_a_full_disk(tmp_path):
    """Only the main process writes the model: it fails alone, and the other one must not wait for it forever."""
    script = tmp_path / "finetune_on_a_full_disk.py"
    script.write_text(FINETUNE_ON_A_FULL_DISK.format(root=str(Path(FINETUNE).parents[1])))
    out = tmp_path / "run"
    result = _two_processes(str(script), *_finetune_args(out)[1:], returncode=1)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    kept = out / "checkpoints" / "step-00000002"
    # One line per process, the same; torchrun ends the other one as soon as one has failed, maybe before it prints.
    assert 1 <= len(errors) <= 2, result.stderr[-3000:]
    assert all(re.fullmatch("error: " + no_space_line(4, r"[\d.]+", r"[\d.]+", kept), line) for line in errors), errors
    assert [p.name for p in kept.parent.iterdir()] == [kept.name]  # no .tmp-step-00000004
    assert (kept / "manifest.json").is_file()


@pytest.mark.slow
def test_max_epochs_counts_the_steps_of_two_processes_and_a_resume_on_one_is_refused(tmp_path):
    epochs = ("train.max_steps=null", "train.max_epochs=1", "train.early_stopping_patience=5")
    result = _two_processes(*_finetune_args(tmp_path / "two", *epochs))
    assert "max_epochs 1 = 2 steps (8 samples / (2 per device x 2 processes x 1 accumulation))" in result.stdout
    assert "this run has 1 (2 steps (train.max_epochs=1), train.eval_steps=2): it never stops early" in result.stderr
    recorded = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert (recorded["step"], recorded["stopped_early"]) == (2, False)
    # On one process the same epoch is 4 steps: the checkpoint's schedule would no longer fit.
    checkpoint = tmp_path / "one" / "checkpoints" / "step-00000002"
    shutil.copytree(tmp_path / "two" / "checkpoints" / "step-00000002", checkpoint)
    recipe = load_recipe("demo.yaml", [*TINY_RUN, *epochs, f"train.output_dir={tmp_path / 'one'}"])
    expected = r"its run is 2 steps long, and here max_epochs 1 = 4 steps \(8 samples / \(2 per device x 1 process x"
    with pytest.raises(TrainingError, match=rf"cannot resume {checkpoint}: {expected}"):
        train(recipe, resume=str(checkpoint))
