"""LoRA through the `peft` library: the layers it adapts, the wrapped model, its trainable count, the merge.

The recipe's `model.peft` section turns it on. LoRA adapters go on the encoder's linear `target_modules`; the
decode head is trained in full (peft's `modules_to_save`), as in PEFT's SegFormer guide. Training, checkpoints
and evaluation use the `PeftModel`; a finished run keeps the adapter alone (`save_adapter`) and writes the merged
ordinary model (`merge`), which loads and pushes as any other.

`peft` is an optional dependency (`pip install "segtune[peft]"`): it is imported only when a recipe asks for it.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from torch import nn
from transformers import PreTrainedModel

from ..errors import RecipeError
from ..recipe import PeftConfig

if TYPE_CHECKING:
    from peft import PeftModel

# model.peft.target_modules when the recipe leaves it unset.
DEFAULT_TARGETS = {
    # Every attention projection: the query, the fused key/value (one LoRA over both: the layer is one GEMM) and
    # the output projection. Spelt "attn.proj", not "proj": the patch embeddings' convs are named `proj` too.
    "mix_transformer": ("attn.q", "attn.kv", "attn.proj"),
    # PEFT's SegFormer guide adapts query and value, which transformers 5 names q_proj and v_proj.
    "segformer": ("q_proj", "v_proj"),
}
HEAD = "decode_head"  # trained in full, never adapted: MiT's head reads its linear weights directly
INSTALL = 'pip install "segtune[peft]"'
# Segformer's attention layers as PEFT's guide (transformers 4) names them, and their transformers 5 names.
_RENAMED = {"query": "q_proj", "key": "k_proj", "value": "v_proj"}


def _peft():
    """The `peft` module.

    Raises:
        RecipeError: peft is not installed (the message says how to install it).
    """
    try:
        import peft
    except ImportError:
        raise RecipeError(
            f"model.peft.method: lora needs the peft library, which is not installed: {INSTALL}"
        ) from None
    return peft


def _matches(name: str, target: str) -> bool:
    """peft's rule for a list of targets: the whole module name, or its end after a dot."""
    return name == target or name.endswith(f".{target}")


def _kind(name: str) -> str:
    """A layer's name without its model prefix and block indices: `mix_transformer.stages.0.blocks.1.attn.q` ->
    `attn.q`."""
    return ".".join([part for part in name.split(".") if not part.isdigit()][-2:])


def encoder_linear_kinds(model: nn.Module) -> list[str]:
    """The distinct names (`_kind`) of the linear layers of `model`'s encoder (all but the head), in model order."""
    kinds = [
        _kind(name)
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and name.split(".")[0] != HEAD
    ]
    return list(dict.fromkeys(kinds))


def _target_problem(model: nn.Module, target: str) -> str | None:
    """What is wrong with one target on `model`, or None."""
    matched = [(name, module) for name, module in model.named_modules() if _matches(name, target)]
    linear = [name for name, module in matched if isinstance(module, nn.Linear)]
    if not linear:
        renamed = _RENAMED.get(target)
        hint = f" (transformers 5 renamed Segformer's {target!r} to {renamed!r})" if renamed else ""
        return f"{target!r} matches no linear layer{hint}"
    not_linear = sorted(
        {f"{_kind(name)} ({type(module).__name__})" for name, module in matched if not isinstance(module, nn.Linear)}
    )
    if not_linear:
        return f"{target!r} also matches layers that are not linear, {not_linear}: name the layer more fully"
    if any(name.split(".")[0] == HEAD for name in linear):
        return f"{target!r} matches layers of the decode head, which is trained in full: name encoder layers"
    return None


def lora_targets(model: nn.Module, settings: PeftConfig, arch: str) -> tuple[str, ...]:
    """The recipe's `target_modules`, or the arch's default, checked against `model`.

    Raises:
        RecipeError: a target matches no linear layer, matches a layer that is not linear, or matches the decode
            head; the message names the model's linear layers.
    """
    targets = tuple(settings.target_modules or DEFAULT_TARGETS[arch])
    problems = [problem for target in targets if (problem := _target_problem(model, target)) is not None]
    if problems:
        raise RecipeError(
            f"model.peft.target_modules: {'; '.join(problems)}. Expected names of encoder linear layers; "
            f"those of {type(model).__name__} are {encoder_linear_kinds(model)}"
        )
    return targets


def apply_lora(model: PreTrainedModel, settings: PeftConfig, arch: str, base_model: str | None) -> PeftModel:
    """`model` wrapped by peft: LoRA on the target layers, the decode head trained in full, all else frozen.

    `base_model` (a Hub id or path, None for random weights) is recorded in the adapter's config, for loading it.

    Raises:
        RecipeError: peft is not installed, or a target does not fit (see `lora_targets`).
    """
    peft = _peft()
    config = peft.LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=list(lora_targets(model, settings, arch)),
        modules_to_save=[HEAD],
    )
    with warnings.catch_warnings():
        # peft 0.21 reads transformers' deprecated `is_gradient_checkpointing` alias; nothing for a user to change.
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing", category=FutureWarning)
        wrapped = peft.get_peft_model(model, config)
    wrapped.peft_config["default"].base_model_name_or_path = base_model
    return wrapped


def is_lora(model: nn.Module) -> bool:
    """Whether `model` is a peft model (False without importing peft when nothing has imported it)."""
    peft = sys.modules.get("peft")
    return peft is not None and isinstance(model, peft.PeftModel)


def trainable_summary(model: PeftModel) -> str:
    """One line: the LoRA settings, the adapted layers, and peft's own count of trainable parameters."""
    trainable, total = model.get_nb_trainable_parameters()
    config = model.peft_config["default"]
    return (
        f"LoRA r={config.r}, alpha={config.lora_alpha:g} on {len(model.base_model.targeted_module_names)} layers "
        f"({', '.join(sorted(config.target_modules))}), {HEAD} in full: {trainable:,} of {total:,} parameters "
        f"trainable ({100 * trainable / total:.2f}%)"
    )


def save_adapter(model: PeftModel, directory: Path) -> None:
    """The adapter alone (peft's `save_pretrained`: its config and weights, LoRA and the decode head)."""
    model.save_pretrained(directory)
    # peft also writes a card template whose every field is a placeholder; `segtune push --adapter` writes one.
    (Path(directory) / "README.md").unlink(missing_ok=True)


def merge(model: PeftModel) -> PreTrainedModel:
    """The ordinary model with the LoRA updates added into its weights and the trained decode head in place.

    Merges in place: `model` is spent afterwards.
    """
    return model.merge_and_unload(safe_merge=True)
