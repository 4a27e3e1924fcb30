"""Optimizer parameter groups and the iteration schedule of the SegFormer recipe.

AdamW, the decode head at `head_lr_mult` x the base lr (mmseg `paramwise_cfg` custom_keys
head lr_mult=10), no weight decay on norms and biases; linear warmup then polynomial decay.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import get_polynomial_decay_schedule_with_warmup
from transformers.trainer_pt_utils import get_parameter_names

from ..recipe import OptimConfig

HEAD_PREFIX = "decode_head."
PEFT_PREFIX = "base_model.model."  # where a peft model (LoRA) holds the wrapped model's parameters
_NORMS = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._BatchNorm)


def _no_decay_names(model: nn.Module) -> set[str]:
    """Parameters of norm layers, and every bias (the Trainer's rule, with BatchNorm and GroupNorm as norms too)."""
    decayed = {name for name in get_parameter_names(model, _NORMS) if not name.endswith("bias")}
    return {name for name, _ in model.named_parameters()} - decayed


def parameter_groups(model: nn.Module, optim: OptimConfig) -> list[dict]:
    """Four AdamW groups: (encoder, head) x (decayed, not decayed). Empty groups are left out, and so are
    frozen parameters (under LoRA, all but the adapters, in the encoder groups, and the decode head).

    Each group carries a `name`, so logs and tests can tell them apart.
    """
    no_decay = _no_decay_names(model)
    groups: dict[str, dict] = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        head = name.removeprefix(PEFT_PREFIX).startswith(HEAD_PREFIX)
        plain = name in no_decay
        key = f"{'head' if head else 'encoder'}{'_no_decay' if plain else ''}"
        group = groups.setdefault(
            key,
            {
                "name": key,
                "params": [],
                "lr": optim.lr * (optim.head_lr_mult if head else 1.0),
                "weight_decay": optim.norm_weight_decay if plain else optim.weight_decay,
            },
        )
        group["params"].append(parameter)
    return list(groups.values())


def build_optimizer(model: nn.Module, optim: OptimConfig) -> torch.optim.AdamW:
    """AdamW over `parameter_groups`; `defaults["lr"]` is the base (encoder) lr the schedule scales from."""
    return torch.optim.AdamW(
        parameter_groups(model, optim), lr=optim.lr, betas=optim.betas, eps=optim.eps, weight_decay=optim.weight_decay
    )


def build_scheduler(
    optimizer: torch.optim.Optimizer, optim: OptimConfig, max_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup over `warmup_steps`, then (1 - t/T)^power decay to `min_lr` at `max_steps`.

    transformers' schedule scales every group by the same factor, so the head keeps its 10x.
    """
    return get_polynomial_decay_schedule_with_warmup(
        optimizer, optim.warmup_steps, max_steps, lr_end=optim.min_lr, power=optim.poly_power
    )
