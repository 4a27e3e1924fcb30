"""segtune's re-implemented Mix Transformer (MiT): config, encoder, backbone and segmentation model."""

from .configuration_mix_transformer import VARIANTS, MixTransformerConfig, MixTransformerConfigError
from .convert_mix_transformer import CheckpointError
from .modeling_mix_transformer import (
    MixTransformerBackbone,
    MixTransformerForSemanticSegmentation,
    MixTransformerModel,
    MixTransformerPreTrainedModel,
)

__all__ = [
    "VARIANTS",
    "CheckpointError",
    "MixTransformerBackbone",
    "MixTransformerConfig",
    "MixTransformerConfigError",
    "MixTransformerForSemanticSegmentation",
    "MixTransformerModel",
    "MixTransformerPreTrainedModel",
]
