"""One `segtune` command line: its subcommands, every way of running them, and a top level that shadows no library."""

from __future__ import annotations

import argparse
import ast
import importlib.metadata
import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import segtune
from segtune.commands import COMMANDS, build_parser, main
from segtune.recipe import all_keys, load_recipe
from tests.conftest import TINY_RUN

PACKAGE = Path(segtune.__file__).resolve().parent


def _env(**extra: str) -> dict[str, str]:
    """This environment without settings that would change a launch (Accelerate's, warning filters), plus `extra`."""
    kept = {k: v for k, v in os.environ.items() if not k.startswith(("ACCELERATE_", "PYTHONWARNINGS"))}
    return {**kept, **extra}


def _python(*args: str, **extra_env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300, env=_env(**extra_env))


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again on leaving: nothing listens there


def test_help_lists_every_command_with_its_description(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: segtune ")
    for name in COMMANDS:
        summary = importlib.import_module(f"segtune.commands.{name}").__doc__.splitlines()[0]
        assert re.search(rf"^ +{name} +{re.escape(summary.split()[0])}", out, re.MULTILINE), (name, out)
    assert "data check" in out and "recipe show" in out


def _parsers(parser: argparse.ArgumentParser):
    """`parser` and every subcommand parser below it."""
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _parsers(sub)


def test_every_option_of_every_command_says_what_it_does_and_its_default():
    parsers = list(_parsers(build_parser()))
    assert {p.prog for p in parsers} >= {
        "segtune train",
        "segtune predict",
        "segtune data check",
        "segtune recipe show",
    }
    for parser in parsers:
        assert parser.description, parser.prog
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                assert all(choice.help for choice in action._choices_actions), parser.prog
                continue
            name = f"{parser.prog} {'/'.join(action.option_strings) or action.dest}"
            assert action.help, f"{name}: no help"
            optional = action.option_strings or action.nargs == "?"
            if optional and not action.required and action.default != argparse.SUPPRESS:
                assert "(default: " in action.help, f"{name}: no default in {action.help!r}"


def test_predict_help_gives_the_sliding_window_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["predict", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--crop_size H W, --crop-size H W sliding-window size, with --mode slide (default: 1024 1024)" in help_text
    assert "(default: whole)" in help_text and "images per forward pass (default: 4)" in help_text


def test_train_help_says_where_the_set_keys_are_listed(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "segtune recipe show RECIPE" in " ".join(capsys.readouterr().out.split())


def test_recipe_show_prints_every_key_with_its_value_and_default(capsys):
    assert main(["recipe", "show", "demo.yaml", "--set", "optim.lr=1e-3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = {line[2:].split()[0]: (line[0], line[2:].split(maxsplit=1)[1]) for line in lines[1:]}
    assert lines[0].split() == ["key", "value", "default"]
    assert list(rows) == all_keys()
    assert re.fullmatch(r"0\.001 +6\.0e-05", rows["optim.lr"][1]) and rows["optim.lr"][0] == "*"  # --set
    assert re.fullmatch(r"\[128, 128\] +\[512, 512\]", rows["augment.crop_size"][1])  # the recipe's
    assert rows["augment.crop_size"][0] == "*"
    assert re.fullmatch(r"0\.01 +0\.01", rows["optim.weight_decay"][1]) and rows["optim.weight_decay"][0] == " "
    assert re.fullmatch(r"null +null", rows["model.init_from"][1])


def test_recipe_show_prints_a_loss_section_as_set_reads_it_back(capsys):
    terms = "loss.terms=[ce, {name: focal, gamma: 1.5, weight: 0.5}]"
    assert main(["recipe", "show", "demo.yaml", "--set", terms, "loss.class_weights=auto"]) == 0
    rows = {line[2:].split()[0]: line for line in capsys.readouterr().out.splitlines()[1:]}
    shown = rows["loss.terms"][2:].split(maxsplit=1)[1].rsplit("  ", 1)[0].strip()
    assert rows["loss.terms"].startswith("*") and rows["loss.terms"].endswith("[]")
    assert shown == "[{name: ce, weight: 1.0}, {alpha: null, gamma: 1.5, name: focal, weight: 0.5}]"
    assert load_recipe("demo.yaml", [f"loss.terms={shown}"]).loss == load_recipe("demo.yaml", [terms]).loss


def test_recipe_show_without_a_recipe_shows_the_defaults(capsys):
    assert main(["recipe", "show"]) == 0
    assert not [line for line in capsys.readouterr().out.splitlines() if line.startswith("*")]


@pytest.mark.parametrize(
    "args, usage",
    [
        (["-m", "segtune", "--help"], "python -m segtune "),
        (["-m", "segtune.finetune", "--help"], "python -m segtune.finetune "),
        (["-m", "segtune.predict", "--help"], "python -m segtune.predict "),
        (["-m", "segtune.push", "--help"], "python -m segtune.push "),
        (["-m", "segtune.data", "check", "--help"], "python -m segtune.data check "),
    ],
)
def test_every_module_form_runs(args, usage):
    done = _python(*args)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert done.stdout.startswith(f"usage: {usage}")


def test_python_m_segtune_runs_a_command_and_reports_a_user_error():
    done = _python("-m", "segtune", "train", "--recipe", "nope.yaml")
    assert done.returncode == 1 and done.stdout == ""
    assert re.fullmatch(r"error: recipe 'nope.yaml' not found: [^\n]+\n", done.stderr), done.stderr


def test_the_console_script_is_declared_and_installed():
    [script] = [e for e in importlib.metadata.entry_points(group="console_scripts") if e.name == "segtune"]
    assert script.load() is main, f"{script.value}: reinstall (pip install -e .)"
    done = subprocess.run(
        [Path(sys.executable).parent / "segtune", "--help"], capture_output=True, text=True, timeout=300, env=_env()
    )
    assert done.returncode == 0 and done.stdout.startswith("usage: segtune ")
    assert all(re.search(rf"^ +{name} ", done.stdout, re.MULTILINE) for name in COMMANDS)


def test_no_module_directly_in_segtune_is_named_like_an_installed_library():
    """Run as a file (`accelerate launch segtune/finetune.py`), segtune/ comes first on sys.path: a module
    there named `evaluate` would be imported for the `evaluate` library."""
    modules = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__", "__main__"}
    names = modules | {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    libraries = set(importlib.metadata.packages_distributions()) | set(sys.stdlib_module_names)
    assert {"evaluate", "datasets", "torch"} <= libraries and {"finetune", "commands", "data"} <= names
    assert not names & libraries


def test_no_module_edits_sys_path():
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            is_sys_path = (
                isinstance(node, ast.Attribute) and node.attr == "path" and getattr(node.value, "id", "") == "sys"
            )
            assert not is_sys_path, f"{path}:{node.lineno} uses sys.path"


@pytest.mark.slow  # a fresh interpreter loads torch, and trains four steps (~15 s)
def test_accelerate_launch_runs_finetune_py_as_a_file(tmp_path):
    out = tmp_path / "run"
    done = _python(
        "-m",
        "accelerate.commands.launch",
        *("--num_processes", "1", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"),
        str(PACKAGE / "finetune.py"),
        *("--recipe", "demo.yaml", "--output_dir", str(out), "--set", *TINY_RUN),
        ACCELERATE_USE_CPU="true",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert re.search(r"^step 4: saved ", done.stdout, re.MULTILINE)
    assert json.loads((out / "metrics.json").read_text())["mean_iou"] >= 0


@pytest.mark.slow  # a fresh interpreter loads torch and a model (~8 s)
def test_predict_prints_no_progress_bar_of_transformers(finished_run, tmp_path):
    image = finished_run / "predictions.png"
    done = _python("-m", "segtune", "predict", "--model", str(finished_run), str(image), "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"wrote 1 predictions to {tmp_path}\n"
    assert done.stderr == ""  # no "Loading weights: 100%|..."


@pytest.mark.slow  # a fresh interpreter, stopped after huggingface_hub's second retry (~10 s)
def test_each_hub_retry_line_is_printed_once(tmp_path):
    """Offline, `model.init: pretrained` retries the Hub: each of huggingface_hub's lines once, not also as
    `WARNING huggingface_hub...: ...` (its own handler and the root one both printed it)."""
    command = [sys.executable, "-m", "segtune", "train", "--recipe", "demo.yaml", "--output_dir", str(tmp_path / "run")]
    command += ["--set", *TINY_RUN, "model.init=pretrained", "model.init_from=user/not-cached"]
    env = _env(HF_ENDPOINT=f"http://127.0.0.1:{_closed_port()}", HF_HOME=str(tmp_path / "hf"), HF_HUB_OFFLINE="0")
    lines = []
    with subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) as process:
        for line in process.stderr:  # ends at the latest when the retries are exhausted and the run stops
            lines.append(line)
            if "[Retry 2/5]" in line:
                break
        process.kill()
    retries = [line for line in lines if "[Retry 1/5]" in line]
    failures = [line for line in lines if "Connection refused" in line]
    assert len(retries) == 1 and len(failures) == 2, "".join(lines)  # two attempts, one retry between them
