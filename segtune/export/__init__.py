"""ONNX export and ONNX Runtime inference: what `segtune export` writes, how it checks itself, and the backend
that runs it in segtune's own inference code.

| module      | concern                                                                          |
|-------------|----------------------------------------------------------------------------------|
| graph.py    | what the graph computes: the model, with optional normalisation before and argmax after |
| exporter.py | checkpoint -> checked ONNX folder (model.onnx, config.json, processor, export.json) |
| check.py    | ONNX Runtime against PyTorch: logits at three unseen sizes, mIoU on the eval split |
| runtime.py  | an ONNX Runtime session that looks like the model to segtune/inference.py         |

`python -m segtune.export` is `segtune export`. Nothing here is imported until used: onnx, onnxscript and
onnxruntime are the optional extra `segtune[onnx]`.
"""

from typing import TYPE_CHECKING

from ..lazy import lazy_exports

if TYPE_CHECKING:
    from .exporter import export_onnx
    from .runtime import OnnxRuntimeModel, load_onnx

_EXPORTS = {
    "export_onnx": ".exporter",
    "OnnxRuntimeModel": ".runtime",
    "load_onnx": ".runtime",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = list(_EXPORTS)
