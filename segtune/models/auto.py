"""Registers the MixTransformer classes with the transformers Auto classes; importing this module does it.

After it, `AutoConfig`, `AutoModel`, `AutoBackbone` and `AutoModelForSemanticSegmentation` load any
`mix_transformer` checkpoint without `trust_remote_code`. Registration lives here, outside the model
folder, because that folder is uploaded unchanged as Hub remote code, where transformers registers it
from the checkpoint's `auto_map` instead.
"""

from transformers import AutoBackbone, AutoConfig, AutoModel, AutoModelForSemanticSegmentation

from .mix_transformer import (
    MixTransformerBackbone,
    MixTransformerConfig,
    MixTransformerForSemanticSegmentation,
    MixTransformerModel,
)

AutoConfig.register(MixTransformerConfig.model_type, MixTransformerConfig, exist_ok=True)
AutoModel.register(MixTransformerConfig, MixTransformerModel, exist_ok=True)
AutoBackbone.register(MixTransformerConfig, MixTransformerBackbone, exist_ok=True)
AutoModelForSemanticSegmentation.register(MixTransformerConfig, MixTransformerForSemanticSegmentation, exist_ok=True)
