"""Recipe -> model: transformers' Segformer or segtune's MixTransformer, from a checkpoint or random weights."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import torch
from transformers import PreTrainedConfig, PreTrainedModel, SegformerForSemanticSegmentation

from ..recipe import ModelConfig
from . import auto  # noqa: F401  (a built model saves and reloads through the Auto classes)
from .lora import apply_lora
from .mix_transformer import CheckpointError, MixTransformerConfig, MixTransformerForSemanticSegmentation

if TYPE_CHECKING:
    from peft import PeftModel

logger = logging.getLogger(__name__)


def _head_overrides(model: ModelConfig, id2label: dict[int, str], ignore_index: int) -> dict[str, Any]:
    return {
        "num_labels": len(id2label),
        "id2label": dict(id2label),
        "label2id": {name: index for index, name in id2label.items()},
        "semantic_loss_ignore_index": ignore_index,
        "drop_path_rate": model.drop_path_rate,
        "classifier_dropout_prob": model.classifier_dropout_prob,
    }


def _checkpoint_type(checkpoint: str) -> str:
    try:
        config, _ = PreTrainedConfig.get_config_dict(checkpoint)
    except OSError as error:
        raise CheckpointError(
            f"model.init_from={checkpoint!r}: no config.json found locally or on the Hub ({error}). "
            "Check the id or path, log in for private repos, or set model.init: random."
        ) from None
    return config.get("model_type", "")


def _pretrained(model: ModelConfig, overrides: dict[str, Any]) -> PreTrainedModel:
    checkpoint = model.checkpoint
    source = _checkpoint_type(checkpoint)
    if model.arch == "mix_transformer" or source == "mix_transformer":
        # segtune converts Segformer checkpoints itself; a mismatched classifier is re-initialised.
        loaded = MixTransformerForSemanticSegmentation.from_pretrained(
            checkpoint, ignore_mismatched_sizes=True, **overrides
        )
        return loaded if model.arch == "mix_transformer" else loaded.to_segformer()
    return SegformerForSemanticSegmentation.from_pretrained(checkpoint, ignore_mismatched_sizes=True, **overrides)


def build_model(model: ModelConfig, id2label: dict[int, str], ignore_index: int = 255) -> PreTrainedModel | PeftModel:
    """The segmentation model a recipe asks for, in training mode, its head sized for `id2label`; with
    `model.peft.method: lora`, wrapped by peft (LoRA on the encoder, the decode head trained in full).

    Raises:
        CheckpointError: `model.init_from` cannot be found or does not fit.
        RecipeError: `model.peft` asks for peft, which is not installed, or names layers the model lacks.
    """
    overrides = _head_overrides(model, id2label, ignore_index)
    if model.init == "random":
        config = MixTransformerConfig.from_variant(model.variant, **overrides)
        built = (
            MixTransformerForSemanticSegmentation(config)
            if model.arch == "mix_transformer"
            else SegformerForSemanticSegmentation(config.to_segformer_config())
        )
    else:
        built = _pretrained(model, overrides)
    channels_last_conv_weights(built)
    if model.peft.method == "lora":
        # Before checkpointing is on: peft would then hook the input embeddings, which a vision model lacks.
        built = apply_lora(built, model.peft, model.arch, model.checkpoint if model.init == "pretrained" else None)
    if model.gradient_checkpointing:
        built.activation_checkpointing_enable()
    return built.train()


def channels_last_conv_weights(model: torch.nn.Module) -> None:
    """Lay conv weights out as channels-last, like the gradients that channels-last inputs give them.

    DDP copies every gradient whose strides differ from its bucket's (and warns); matching layouts
    avoid that copy each step. Values and saved checkpoints are unchanged.
    """
    for module in model.modules():
        # 1x1 kernels are left alone: their layout is ambiguous, and the fast decode head uses its
        # fuse weight as a matrix, whose gradient is plain contiguous.
        if isinstance(module, torch.nn.Conv2d) and module.kernel_size != (1, 1):
            weight = module.weight
            out, inp, height, width = weight.shape
            laid_out = torch.empty_strided(
                weight.shape, (height * width * inp, 1, width * inp, inp), dtype=weight.dtype, device=weight.device
            )
            module.weight = torch.nn.Parameter(laid_out.copy_(weight.detach()), requires_grad=weight.requires_grad)
