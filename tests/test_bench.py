"""The benchmarks stay runnable here: bench/gpu_train.py (no GPU needed) and bench/export_speed.py run every part at
toy sizes on the CPU in their --smoke mode."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # a fresh interpreter, four generated 1024x2048 scenes and a 3-step loop (~20 s)
def test_gpu_benchmark_runs_every_part_in_smoke_mode(tmp_path):
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu_train.py"), "--smoke", "--data", str(tmp_path / "city")],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert re.search(r"^\| mit-b0 \| 64 \| [\d.]+ \| [\d.]+ \| - \| [\d.]+x \|", out, re.MULTILINE), out
    assert re.search(r"^## Data only: .* [\d.]+ MB per sample", out, re.MULTILINE), out
    assert re.search(r"^\| segtune eager \| [\d.]+ \| [\d.]+ \| \*\*\d+%\*\* \| n/a \|", out, re.MULTILINE), out


@pytest.mark.slow  # a fresh interpreter and an export of a toy model (~20-60 s)
def test_export_benchmark_runs_in_smoke_mode():
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "export_speed.py"), "--smoke", "--memory"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert re.search(r"^export with torch\.onnx\.export\(dynamo=True\).*: toy [\d.]+ s$", done.stdout, re.MULTILINE)
    row = r"^\| toy \| 64x64 \| {side} \| \d+ \| [\d.]+ \| [\d.]+x \|{peaks}$"
    assert re.search(row.format(side=r"PyTorch eager fp32 \(CPU\)", peaks=""), done.stdout, re.MULTILINE), done.stdout
    peaks = r" -?[\d.]+ / -?[\d.]+ \|"
    assert re.search(row.format(side=r"ONNX Runtime fp32 \(CPU\)", peaks=peaks), done.stdout, re.MULTILINE), done.stdout
