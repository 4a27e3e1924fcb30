"""The library private APIs segtune relies on (segtune/compat.py) still exist and still behave as assumed.

If one of these fails after an upgrade, segtune/compat.py is the one place to adapt.
"""

from __future__ import annotations

import inspect

import evaluate
from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState

from segtune.compat import NoMetricCache, reset_accelerate_state, set_accumulation_counter
from segtune.metrics import MeanIoU


def test_accelerate_state_reset_still_exists_and_allows_a_second_precision():
    assert "reset_partial_state" in inspect.signature(AcceleratorState._reset_state).parameters
    assert callable(GradientState._reset_state)
    reset_accelerate_state()
    Accelerator(mixed_precision="no", cpu=True)
    reset_accelerate_state()
    assert Accelerator(mixed_precision="bf16", cpu=True).mixed_precision == "bf16"
    reset_accelerate_state()


def test_accelerate_still_decides_accumulation_from_its_step_counter():
    reset_accelerate_state()
    accelerator = Accelerator(gradient_accumulation_steps=4, cpu=True)
    assert "self.step" in inspect.getsource(Accelerator._do_sync)
    set_accumulation_counter(accelerator, 7)  # the next micro-batch is the 8th: it syncs
    accelerator._do_sync()
    assert accelerator.sync_gradients
    reset_accelerate_state()


def test_evaluate_still_builds_its_cache_folder_through_build_data_dir(tmp_path, monkeypatch):
    assert "self._build_data_dir()" in inspect.getsource(evaluate.Metric.__init__)
    monkeypatch.setattr(evaluate.config, "HF_METRICS_CACHE", str(tmp_path / "cache"))
    assert issubclass(MeanIoU, NoMetricCache)
    metric = MeanIoU(num_labels=3)
    assert metric.data_dir.startswith(str(tmp_path / "cache"))  # where evaluate's own Metric puts its cache
    assert not (tmp_path / "cache").exists()  # evaluate's own Metric would have created it
