"""Models: segtune's MixTransformer family, checkpoint conversion, recipe -> model, loading for inference.

Importing this package registers the MixTransformer classes with the transformers Auto classes.

| module            | concern                                                                 |
|-------------------|-------------------------------------------------------------------------|
| mix_transformer/  | config, model, Segformer key map: uploadable unchanged as Hub remote code |
| auto.py           | registration with the Auto classes                                      |
| convert.py        | NVlabs / mmseg `.pth` key maps                                          |
| build.py          | recipe -> model (segformer or mix_transformer, pretrained or random)     |
| lora.py           | LoRA through peft: target layers, the wrapped model, the merge           |
| loading.py        | any checkpoint (directory or Hub id) and its image processor, for inference |
"""

from . import (
    auto,  # noqa: F401  (registers the Auto classes)
    mix_transformer,
)
from .mix_transformer import *  # noqa: F403  (the model family is this package's public API)

__all__ = mix_transformer.__all__
