"""The command lines as a user meets them: one spelling, one exit status, no noise, tracebacks for bugs."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys

import pytest

from segtune.commands import main
from segtune.data.__main__ import main as data_alias
from segtune.finetune import main as finetune_alias
from segtune.models.mix_transformer import MixTransformerForSemanticSegmentation
from segtune.predict import main as predict_alias
from segtune.push import main as push_alias
from tests.conftest import TINY_RUN

# Every command, by the name its usage line gives it: its `main`, and the arguments that select it there.
COMMANDS = {
    "segtune train": (main, ["train"]),
    "segtune evaluate": (main, ["evaluate"]),
    "segtune predict": (main, ["predict"]),
    "segtune push": (main, ["push"]),
    "segtune data check": (main, ["data", "check"]),
    "segtune recipe show": (main, ["recipe", "show"]),
    "python -m segtune.finetune": (finetune_alias, []),
    "python -m segtune.predict": (predict_alias, []),
    "python -m segtune.push": (push_alias, []),
    "python -m segtune.data check": (data_alias, ["check"]),
}


def _exit_status(name: str, option: str) -> int:
    """Run the command `name` with one option, which ends it (SystemExit); return its exit status."""
    command, selector = COMMANDS[name]
    with pytest.raises(SystemExit) as done:
        command([*selector, option])
    return done.value.code


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_help_names_the_command_as_it_is_run(name, capsys):
    assert _exit_status(name, "--help") == 0
    assert capsys.readouterr().out.startswith(f"usage: {name} ")


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_misuse_exits_1_with_one_error_line(name, capsys):
    assert _exit_status(name, "--no_such_option") == 1
    err = capsys.readouterr().err
    assert err.startswith(f"usage: {name}") and err.count("error: ") == 1 and "\nerror: " in err


def test_snake_case_options_also_answer_to_kebab_case(tmp_path, finished_run, capsys):
    image = sorted((finished_run).glob("predictions.png"))[0]
    for spelling in ("--crop_size", "--crop-size"):
        out = tmp_path / spelling
        args = ["--model", str(finished_run), str(image), "--out", str(out), "--mode", "slide", spelling, "32", "32"]
        assert main(["predict", *args, "--batch-size", "1", "--stride", "24", "24"]) == 0
        assert (out / "predictions_mask.png").is_file()
    assert main(["train", "--recipe", "demo.yaml", "--output-dir", str(tmp_path), "--set", "optim.lr=-1"]) == 1


def test_the_same_user_error_exits_1_from_every_command(finished_run, capsys):
    bad = ["--set", "data.nope=1"]
    assert main(["train", "--recipe", "demo.yaml", *bad]) == 1
    assert main(["evaluate", "--model", str(finished_run), "--recipe", "demo.yaml", *bad]) == 1
    assert main(["data", "check", *bad]) == 1
    assert main(["recipe", "show", "demo.yaml", *bad]) == 1
    assert capsys.readouterr().err.count("unknown key 'data.nope'") == 4
    assert main(["push", str(finished_run.parent)]) == 1
    assert "not a finished segtune run" in capsys.readouterr().err


def test_a_bug_keeps_its_traceback_after_saving_a_checkpoint(tmp_path, monkeypatch, capsys):
    calls = {"n": 0}
    real = MixTransformerForSemanticSegmentation.loss

    def buggy_loss(self, logits, labels):
        calls["n"] += 1
        if calls["n"] == 3:
            raise TypeError("unsupported operand type(s) for +: 'Tensor' and 'NoneType'")
        return real(self, logits, labels)

    monkeypatch.setattr(MixTransformerForSemanticSegmentation, "loss", buggy_loss)
    args = ["train", "--recipe", "demo.yaml", "--output_dir", str(tmp_path / "run"), "--set", *TINY_RUN]
    with pytest.raises(TypeError, match="unsupported operand"):  # not turned into a one-line error
        main(args)
    err = capsys.readouterr().err
    assert re.search(r"training stopped at step 2 by TypeError; saved \S+step-00000002, continue with", err)
    assert "error:" not in err
    monkeypatch.undo()
    assert main([*args, "--resume"]) == 0


def test_evaluate_ends_with_the_miou(finished_run, capsys):
    assert main(["evaluate", "--model", str(finished_run), "--recipe", "demo.yaml", "--set", *TINY_RUN]) == 0
    assert re.fullmatch(r"mIoU 0\.\d{4} \(.+ on demo, whole inference\)", capsys.readouterr().out.splitlines()[-1])


def test_model_files_honour_the_umask(finished_run):
    umask = os.umask(0)
    os.umask(umask)
    files = [finished_run / "model.safetensors", *finished_run.glob("checkpoints/*/model.safetensors")]
    assert len(files) == 2
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, path


def _run(*args: str, cwd=None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ACCELERATE_", "PYTHONWARNINGS"))}
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=300, cwd=cwd, env=env)


@pytest.mark.slow  # a fresh interpreter loads torch and trains two steps (~15 s)
def test_the_quick_start_prints_no_warning_and_one_line_per_checkpoint(tmp_path):
    out = tmp_path / "demo"
    done = _run("segtune", "train", "--recipe", "demo.yaml", "--output_dir", str(out), "--set", *TINY_RUN)
    assert done.returncode == 0, done.stderr
    assert not re.search(r"warn", done.stderr, re.IGNORECASE), done.stderr
    assert re.search(r"training: 100%\|", done.stderr)  # segtune's bar, while transformers' stay off:
    assert "Loading weights" not in done.stderr and "Writing model shards" not in done.stderr
    assert "accelerate.checkpointing" not in done.stderr + done.stdout and ".tmp-step" not in done.stdout
    saved = re.findall(r"^step (\d): saved (\S+)$", done.stdout, re.MULTILINE)
    assert saved == [
        ("2", str(out / "checkpoints" / "step-00000002")),
        ("4", str(out / "checkpoints" / "step-00000004")),
    ]
    assert re.findall(r"^step (\d): mIoU 0\.\d{4}", done.stdout, re.MULTILINE) == ["2", "4"]  # each on its own line


@pytest.mark.slow  # a fresh interpreter (~5 s)
def test_predict_help_prints_no_warning():
    done = _run("segtune.predict", "--help")
    assert done.returncode == 0 and done.stdout.startswith("usage: python -m segtune.predict")
    assert done.stderr == ""
