"""bench/gpu_train.py stays runnable where no GPU is: its --smoke mode runs every part at toy sizes on the CPU."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import tifffile

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
