"""MixTransformer (MiT) configuration.

This folder is uploaded unchanged as Hub remote code, so it imports only torch, transformers and
its sibling files (relative imports).
"""

from __future__ import annotations

from typing import Any

from transformers import PreTrainedConfig, SegformerConfig
from transformers.backbone_utils import BackboneConfigMixin

_PER_STAGE_FIELDS = (
    "depths",
    "sr_ratios",
    "hidden_sizes",
    "patch_sizes",
    "strides",
    "num_attention_heads",
    "mlp_ratios",
)
# The fields MixTransformerConfig shares with transformers' SegformerConfig, name for name, so one
# config converts into the other without a lookup table.
SEGFORMER_FIELDS = (
    "num_channels",
    "num_encoder_blocks",
    *_PER_STAGE_FIELDS,
    "hidden_act",
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "classifier_dropout_prob",
    "initializer_range",
    "drop_path_rate",
    "layer_norm_eps",
    "decoder_hidden_size",
    "semantic_loss_ignore_index",
)

# SegFormer paper, Table 6 / NVlabs mix_transformer.py: mit_b0 .. mit_b5.
_WIDE = (64, 128, 320, 512)
VARIANTS: dict[str, dict[str, Any]] = {
    "mit-b0": {"hidden_sizes": (32, 64, 160, 256), "depths": (2, 2, 2, 2), "decoder_hidden_size": 256},
    "mit-b1": {"hidden_sizes": _WIDE, "depths": (2, 2, 2, 2), "decoder_hidden_size": 256},
    "mit-b2": {"hidden_sizes": _WIDE, "depths": (3, 4, 6, 3), "decoder_hidden_size": 768},
    "mit-b3": {"hidden_sizes": _WIDE, "depths": (3, 4, 18, 3), "decoder_hidden_size": 768},
    "mit-b4": {"hidden_sizes": _WIDE, "depths": (3, 8, 27, 3), "decoder_hidden_size": 768},
    "mit-b5": {"hidden_sizes": _WIDE, "depths": (3, 6, 40, 3), "decoder_hidden_size": 768},
}


class MixTransformerConfigError(ValueError):
    """A MixTransformerConfig whose values cannot describe a model."""


class MixTransformerConfig(BackboneConfigMixin, PreTrainedConfig):
    r"""
    Configuration of a SegFormer Mix Transformer (MiT) encoder and its all-MLP decode head.

    Field names are those of transformers' `SegformerConfig`, so `MixTransformerConfig.from_segformer`
    and `to_segformer_config` convert without renaming. Defaults describe MiT-B0.

    Args:
        num_channels (`int`, defaults to 3): input image channels.
        num_encoder_blocks (`int`, defaults to 4): number of hierarchical stages.
        depths (`list[int]`): transformer blocks per stage.
        sr_ratios (`list[int]`): sequence-reduction ratio R of the efficient self-attention per stage.
        hidden_sizes (`list[int]`): channels per stage.
        patch_sizes (`list[int]`): kernel of the overlapped patch embedding per stage.
        strides (`list[int]`): stride of the overlapped patch embedding per stage.
        num_attention_heads (`list[int]`): heads per stage.
        mlp_ratios (`list[int]`): Mix-FFN expansion per stage.
        hidden_act (`str`, defaults to `"gelu"`): Mix-FFN activation (a key of `transformers.activations.ACT2FN`).
        hidden_dropout_prob (`float`): dropout after the attention projection and in the Mix-FFN.
        attention_probs_dropout_prob (`float`): dropout on the attention weights.
        classifier_dropout_prob (`float`, defaults to 0.1): channel dropout before the classifier, as NVlabs.
        initializer_range (`float`, defaults to 0.02): std of the truncated-normal init of linear layers.
        drop_path_rate (`float`, defaults to 0.1): stochastic depth of the last block, rising linearly from 0.
        layer_norm_eps (`float`, defaults to 1e-6): epsilon of the block and stage LayerNorms.
        decoder_hidden_size (`int`, defaults to 256): channels of the all-MLP decode head.
        semantic_loss_ignore_index (`int`, defaults to 255): label value ignored by the loss.
        out_features / out_indices (`list`, *optional*): stages returned by `MixTransformerBackbone`;
            all four stages by default, since MiT is built for dense prediction.

    Example:

    ```python
    >>> from segtune.models.mix_transformer import MixTransformerConfig, MixTransformerForSemanticSegmentation
    >>> config = MixTransformerConfig.from_variant("mit-b2", num_labels=19)
    >>> model = MixTransformerForSemanticSegmentation(config)
    ```
    """

    model_type = "mix_transformer"
    attribute_map = {"num_hidden_layers": "num_encoder_blocks"}

    num_channels: int = 3
    num_encoder_blocks: int = 4
    depths: list[int] | tuple[int, ...] = (2, 2, 2, 2)
    sr_ratios: list[int] | tuple[int, ...] = (8, 4, 2, 1)
    hidden_sizes: list[int] | tuple[int, ...] = (32, 64, 160, 256)
    patch_sizes: list[int] | tuple[int, ...] = (7, 3, 3, 3)
    strides: list[int] | tuple[int, ...] = (4, 2, 2, 2)
    num_attention_heads: list[int] | tuple[int, ...] = (1, 2, 5, 8)
    mlp_ratios: list[int] | tuple[int, ...] = (4, 4, 4, 4)
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.0
    attention_probs_dropout_prob: float = 0.0
    classifier_dropout_prob: float = 0.1
    initializer_range: float = 0.02
    drop_path_rate: float = 0.1
    layer_norm_eps: float = 1e-6
    decoder_hidden_size: int = 256
    semantic_loss_ignore_index: int = 255
    _out_features: list[str] | None = None
    _out_indices: list[int] | None = None

    def __post_init__(self, **kwargs: Any) -> None:
        for name in _PER_STAGE_FIELDS:
            setattr(self, name, [int(v) for v in getattr(self, name)])
        self._check_stages()
        self.stage_names = [f"stage{i}" for i in range(1, self.num_encoder_blocks + 1)]
        out_features, out_indices = kwargs.pop("out_features", None), kwargs.pop("out_indices", None)
        if out_features is None and out_indices is None:
            out_features = list(self.stage_names)
        self.set_output_features_output_indices(out_features=out_features, out_indices=out_indices)
        super().__post_init__(**kwargs)

    def _check_stages(self) -> None:
        for name in _PER_STAGE_FIELDS:
            values = getattr(self, name)
            if len(values) != self.num_encoder_blocks:
                raise MixTransformerConfigError(
                    f"MixTransformerConfig.{name}: expected {self.num_encoder_blocks} values "
                    f"(one per stage, num_encoder_blocks={self.num_encoder_blocks}), found {len(values)}: {values}"
                )
            if any(v <= 0 for v in values):
                raise MixTransformerConfigError(
                    f"MixTransformerConfig.{name}: expected positive values, found {values}"
                )
        for stage, (size, heads) in enumerate(zip(self.hidden_sizes, self.num_attention_heads)):
            if size % heads:
                raise MixTransformerConfigError(
                    f"MixTransformerConfig: stage {stage} has hidden_sizes[{stage}]={size}, which is not divisible "
                    f"by num_attention_heads[{stage}]={heads}"
                )

    @classmethod
    def from_variant(cls, name: str, **overrides: Any) -> MixTransformerConfig:
        """Return the config of a paper variant, `"mit-b0"` .. `"mit-b5"`, with `overrides` applied.

        Raises:
            MixTransformerConfigError: `name` is not a known variant.
        """
        key = name.lower()
        if key not in VARIANTS:
            raise MixTransformerConfigError(f"unknown MiT variant {name!r}: expected one of {sorted(VARIANTS)}")
        return cls(**{**VARIANTS[key], **overrides})

    @classmethod
    def from_segformer(cls, config: SegformerConfig, **overrides: Any) -> MixTransformerConfig:
        """Convert a transformers `SegformerConfig` (labels included), then apply `overrides`.

        Asking for another `num_labels` without an `id2label` drops the checkpoint's label names.
        """
        values: dict[str, Any] = {name: getattr(config, name) for name in SEGFORMER_FIELDS}
        if "num_labels" not in overrides or overrides["num_labels"] == config.num_labels:
            values.update(id2label=config.id2label, label2id=config.label2id)
        return cls(**{**values, **overrides})

    def to_segformer_config(self) -> SegformerConfig:
        """Return the equivalent transformers `SegformerConfig`, labels included."""
        values = {name: getattr(self, name) for name in SEGFORMER_FIELDS}
        return SegformerConfig(**values, id2label=self.id2label, label2id=self.label2id, reshape_last_stage=True)


__all__ = ["MixTransformerConfig", "MixTransformerConfigError", "VARIANTS"]
