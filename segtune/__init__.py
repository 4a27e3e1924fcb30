"""segtune: fine-tune SegFormer semantic-segmentation models on Hugging Face transformers.

    import segtune
    from segtune import MixTransformerForSemanticSegmentation   # loads the model code and registers
                                                                # it with the transformers Auto classes
    masks = segtune.segment("outputs/demo", ["a.jpg"])          # class-index maps, any checkpoint
    segtune.export_onnx("outputs/demo")                         # outputs/demo/onnx/, checked against PyTorch

The command lines are one `segtune` program (`segtune --help`; segtune/commands/).

`import segtune` itself is light (no torch): the public names below are imported on first use, so the
command lines can check a recipe before loading torch. Using any model name, or anything that builds or
loads a model, registers the MixTransformer classes with AutoConfig, AutoModel, AutoBackbone and
AutoModelForSemanticSegmentation (`segtune.models.auto`).
"""

from typing import TYPE_CHECKING

from .lazy import lazy_exports

if TYPE_CHECKING:  # what IDEs and type checkers follow; at run time, `lazy_exports` imports on first use
    from .export import export_onnx
    from .inference import segment
    from .metrics import MeanIoU
    from .models import (
        MixTransformerBackbone,
        MixTransformerConfig,
        MixTransformerForSemanticSegmentation,
        MixTransformerModel,
    )
    from .recipe import Recipe, load_recipe
    from .train import train

__version__ = "0.1.0"

_EXPORTS = {
    "MixTransformerBackbone": ".models",
    "MixTransformerConfig": ".models",
    "MixTransformerForSemanticSegmentation": ".models",
    "MixTransformerModel": ".models",
    "MeanIoU": ".metrics",
    "Recipe": ".recipe",
    "load_recipe": ".recipe",
    "segment": ".inference",
    "export_onnx": ".export",
    "train": ".train",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = ["__version__", *_EXPORTS]
