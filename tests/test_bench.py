"""The benchmarks stay runnable: bench/gpu_train.py (where no GPU is), bench/finetune_options.py and
bench/export_speed.py and bench/check_speed.py run every part at toy sizes on the CPU in --smoke mode,
bench/tile_memory.py on a small image."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import tifffile

ROOT = Path(__file__).resolve().parents[1]


def smoke(script: str, *args: str, timeout: int) -> str:
    """The stdout of `python bench/SCRIPT --smoke ARGS` in a fresh interpreter; fails the test if it fails."""
    command = [sys.executable, str(ROOT / "bench" / script), "--smoke", *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.mark.slow  # a fresh interpreter, four generated 1024x2048 scenes and a 3-step loop (~20 s)
def test_gpu_benchmark_runs_every_part_in_smoke_mode(tmp_path):
    out = smoke("gpu_train.py", "--data", str(tmp_path / "city"), timeout=600)
    assert re.search(r"^\| mit-b0 \| 64 \| [\d.]+ \| [\d.]+ \| - \| [\d.]+x \|", out, re.MULTILINE), out
    assert re.search(r"^## Data only: .* [\d.]+ MB per sample", out, re.MULTILINE), out
    assert re.search(r"^\| segtune eager \| [\d.]+ \| [\d.]+ \| \*\*\d+%\*\* \| n/a \|", out, re.MULTILINE), out


@pytest.mark.slow  # a fresh interpreter per variant, four tiny training runs (~1 min)
def test_finetune_options_benchmark_runs_every_part_in_smoke_mode(tmp_path):
    out = smoke("finetune_options.py", "--work", str(tmp_path), timeout=900)
    cost = r"^\| {} \| \d+ \([\d.]+x\) \| \d+ \([\d.]+x\) \| {} \| [\d.]+ \([\d.]+x\) \| {} \|$"
    assert re.search(cost.format("full fine-tuning", r"3,715,686 \(100\.0%\)", "-"), out, re.MULTILINE), out
    # LoRA's trainable count is peft's (the line the run prints at its start), and its checkpoint is smaller.
    assert re.search(cost.format(r"LoRA, attention \(default\)", r"510,982 \(12\.1%\)", r"[\d.]+"), out, re.MULTILINE)
    assert "decode_head in full: 510,982 of 4,226,668 parameters trainable (12.09%)" in out
    assert re.search(r"^## Losses: the cost of each loss relative to CE \(mit-b0, 64x64 crops", out, re.MULTILINE)
    for loss in ("the model's own loss \\(CE\\)", "ce, class_weights auto", "ohem", "lovasz", "ce \\+ dice"):
        assert re.search(rf"^\| {loss} \| \d+ \| [\d.]+x \|$", out, re.MULTILINE), out
    for variant in (r"full fine-tuning", r"LoRA, attention \(default\)", r"LoRA, attention \+ Mix-FFN"):
        assert re.search(rf"^\| {variant} \| 0\.\d{{4}} \| [+-]0\.\d{{4}} \| \d+ \|$", out, re.MULTILINE), out
    costs = json.loads(out.strip().splitlines()[-1])["cost"]
    assert costs["LoRA, attention (default)"]["checkpoint_mb"] < costs["full fine-tuning"]["checkpoint_mb"]


@pytest.mark.slow  # a fresh interpreter, an export of a toy model and a child process per cell (~30-60 s)
def test_export_benchmark_runs_in_smoke_mode():
    out = smoke("export_speed.py", "--memory", timeout=600)
    assert re.search(r"^export with torch\.onnx\.export\(dynamo=True\).*: toy [\d.]+ s$", out, re.MULTILINE), out
    row = r"^\| toy \| 64x64 \| {side} \| \d+ \| [\d.]+ \| [\d.]+x \|{peaks}$"
    assert re.search(row.format(side=r"PyTorch eager fp32 \(CPU\)", peaks=""), out, re.MULTILINE), out
    peaks = r" -?[\d.]+ / -?[\d.]+ \|"
    assert re.search(row.format(side=r"ONNX Runtime fp32 \(CPU\)", peaks=peaks), out, re.MULTILINE), out


@pytest.mark.slow  # two fresh interpreters predict small TIFFs with a random B0 (~30 s)
def test_tile_memory_benchmark_reports_time_and_peak_memory(tmp_path):
    command = [sys.executable, str(ROOT / "bench" / "tile_memory.py"), "--size", "640", "--crop", "256"]
    command += ["--stride", "192", "--work", str(tmp_path)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    row = (
        r"^\| 640 x 640 \| 9 \| \d+ min \d\d s \| \d+ min \d\d s \| (\d+\.\d\d) GiB \| (\d+\.\d\d) GiB \| 0\.0 GiB \|$"
    )
    peak, baseline = map(float, re.search(row, done.stdout, re.MULTILINE).groups())
    assert 0.2 < baseline <= peak < 4
    assert tifffile.imread(tmp_path / "out" / "scene_640_labels.tif").shape == (640, 640)


@pytest.mark.slow  # a fresh interpreter, eight generated scenes and the quick check of 40 pairs and the demo data (~10 s)
def test_check_speed_benchmark_runs_in_smoke_mode():
    out = smoke("check_speed.py", timeout=300)
    assert "quick check, 40 64x128 pairs (34 train + 6 val), 40 masks decoded, 1 thread" in out, out
    assert re.search(r"^measured: [\d.]+ s \(median of 1 rounds\)$", out, re.MULTILINE), out
    assert re.search(r"^parts: [\d.]+ ms per header pair, [\d.]+ ms per decoded and tallied mask$", out, re.MULTILINE)
    assert re.search(r"^demo data \(16 \+ 64 synthetic samples\): quick [\d.]+ s$", out, re.MULTILINE), out
