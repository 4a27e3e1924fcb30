"""segtune: fine-tune SegFormer semantic-segmentation models on Hugging Face transformers.

Importing segtune registers the MixTransformer classes with the transformers Auto classes.
"""

from transformers import (
    AutoBackbone,
    AutoConfig,
    AutoModel,
    AutoModelForSemanticSegmentation,
)

from .models.mix_transformer import (
    MixTransformerBackbone,
    MixTransformerConfig,
    MixTransformerForSemanticSegmentation,
    MixTransformerModel,
)

from .predict import predict

__version__ = "0.1.0"

AutoConfig.register(MixTransformerConfig.model_type, MixTransformerConfig, exist_ok=True)
AutoModel.register(MixTransformerConfig, MixTransformerModel, exist_ok=True)
AutoBackbone.register(MixTransformerConfig, MixTransformerBackbone, exist_ok=True)
AutoModelForSemanticSegmentation.register(MixTransformerConfig, MixTransformerForSemanticSegmentation, exist_ok=True)

__all__ = [
    "MixTransformerBackbone",
    "MixTransformerConfig",
    "MixTransformerForSemanticSegmentation",
    "MixTransformerModel",
    "__version__",
    "predict",
]
