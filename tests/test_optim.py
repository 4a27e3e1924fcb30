"""Optimizer groups (head lr x10, no decay on norms and biases) and the warmup + poly schedule."""

import pytest
import torch
from transformers import SegformerForSemanticSegmentation

from segtune.models.mix_transformer import MixTransformerForSemanticSegmentation
from segtune.recipe import OptimConfig
from segtune.train.optim import build_optimizer, build_scheduler, parameter_groups
from tests.conftest import tiny_config


@pytest.mark.parametrize("arch", ["mix_transformer", "segformer"])
def test_parameter_groups(arch):
    config = tiny_config()
    model = (
        MixTransformerForSemanticSegmentation(config)
        if arch == "mix_transformer"
        else SegformerForSemanticSegmentation(config.to_segformer_config())
    )
    optim = OptimConfig(lr=1e-4, weight_decay=0.01, head_lr_mult=10.0, norm_weight_decay=0.0)
    groups = {g["name"]: g for g in parameter_groups(model, optim)}
    assert set(groups) == {"encoder", "encoder_no_decay", "head", "head_no_decay"}
    names = {id(p): n for n, p in model.named_parameters()}
    grouped = [names[id(p)] for g in groups.values() for p in g["params"]]
    assert sorted(grouped) == sorted(names.values())  # every parameter exactly once
    for name in (names[id(p)] for p in groups["head"]["params"] + groups["head_no_decay"]["params"]):
        assert name.startswith("decode_head.")
    assert groups["head"]["lr"] == pytest.approx(1e-3) and groups["encoder"]["lr"] == pytest.approx(1e-4)
    plain = [names[id(p)] for p in groups["encoder_no_decay"]["params"] + groups["head_no_decay"]["params"]]
    assert all(n.endswith("bias") or "norm" in n for n in plain)
    assert all(p.ndim > 1 for g in ("encoder", "head") for p in groups[g]["params"])  # only matrices and kernels decay
    assert groups["encoder_no_decay"]["weight_decay"] == 0.0 and groups["encoder"]["weight_decay"] == 0.01
    # BatchNorm of the head and LayerNorms of the encoder are in the no-decay groups.
    assert "decode_head.batch_norm.weight" in plain
    assert any("norm" in n and n.endswith("weight") and not n.startswith("decode_head") for n in plain)


def test_warmup_then_poly_schedule_keeps_the_head_multiplier():
    model = MixTransformerForSemanticSegmentation(tiny_config())
    optim = OptimConfig(lr=1e-3, head_lr_mult=10.0, warmup_steps=10, poly_power=1.0, min_lr=0.0)
    optimizer = build_optimizer(model, optim)
    scheduler = build_scheduler(optimizer, optim, max_steps=110)
    lrs = []
    for _ in range(111):
        lrs.append({g["name"]: g["lr"] for g in optimizer.param_groups})
        optimizer.step()
        scheduler.step()
    assert lrs[0]["encoder"] == 0.0
    assert lrs[5]["encoder"] == pytest.approx(0.5e-3)
    assert lrs[10]["encoder"] == pytest.approx(1e-3)
    assert lrs[60]["encoder"] == pytest.approx(0.5e-3)  # halfway through the linear (power 1) decay
    assert lrs[110]["encoder"] == pytest.approx(0.0, abs=1e-12)
    for step in (5, 10, 60):
        assert lrs[step]["head"] == pytest.approx(10 * lrs[step]["encoder"])
    assert isinstance(optimizer, torch.optim.AdamW) and optimizer.defaults["betas"] == (0.9, 0.999)
