"""What an exported graph computes: the model's logits, optionally with the image processor's normalisation
before them and the upsampling and argmax after them, as segtune's PyTorch pipeline computes them.

    graph = ExportedGraph(model, GraphOptions(preprocess=True, labels=True), processor)
    graph(images)   # uint8 (B, 3, H, W) -> class maps (B, H, W), uint8 while the classes fit

The same module is what `torch.onnx.export` traces and, in fp32, the PyTorch reference the export's check
compares ONNX Runtime against.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..inference import whole_logits

INPUT_NAME = "pixel_values"  # transformers' name: optimum and transformers.js feed this input


@dataclass(frozen=True)
class GraphOptions:
    """What goes into the graph besides the model: `segtune export`'s `--half`, `--preprocess` and `--labels`."""

    half: bool = False  # fp16 weights and activations (normalisation and upsampling stay fp32)
    preprocess: bool = False  # uint8 images in: the processor's rescale and normalisation inside the graph
    labels: bool = False  # class maps out: logits upsampled to the input size, then the argmax

    @property
    def output_name(self) -> str:
        return "labels" if self.labels else "logits"

    @property
    def precision(self) -> str:
        return "fp16" if self.half else "fp32"


def label_dtype(num_labels: int) -> torch.dtype:
    """uint8 when every class id fits in one, else int64 (what ONNX's ArgMax returns)."""
    return torch.uint8 if num_labels <= 256 else torch.int64


def _per_channel(value: float | list[float]) -> torch.Tensor:
    return torch.tensor(value if isinstance(value, (list, tuple)) else [value] * 3, dtype=torch.float32).view(3, 1, 1)


class Normalise(nn.Module):
    """The image processor's rescale and normalisation of uint8 images (B, 3, H, W), to float32.

    Rescale and normalisation are fused as transformers' torchvision backend fuses them (mean and std
    multiplied by 1 / rescale_factor), so the graph computes the very same float32 operations.
    Resizing is not part of it: the graph takes images at the size to predict at.
    """

    def __init__(self, processor: Any) -> None:
        super().__init__()
        self.scale = processor.rescale_factor if processor.do_rescale else None
        mean = std = None
        if processor.do_normalize:
            mean, std = _per_channel(processor.image_mean), _per_channel(processor.image_std)
            if self.scale is not None:
                mean, std, self.scale = mean * (1.0 / self.scale), std * (1.0 / self.scale), None
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float()
        if self.scale is not None:
            x = x * self.scale
        if self.mean is not None:
            x = (x - self.mean) / self.std
        return x


class ExportedGraph(nn.Module):
    """The model between its optional pre- and post-processing, with one input and one output.

    `model` is used as given: pass it in fp16 for a `half` graph.
    """

    def __init__(self, model: nn.Module, options: GraphOptions, processor: Any = None) -> None:
        super().__init__()
        self.model = model
        self.options = options
        self.normalise = Normalise(processor) if options.preprocess else None
        self.label_dtype = label_dtype(model.config.num_labels)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """float (B, 3, H, W), or uint8 with `preprocess` -> logits (B, K, H/4, W/4), or (B, H, W) class ids with `labels`."""
        x = pixel_values if self.normalise is None else self.normalise(pixel_values)
        x = x.to(next(self.model.parameters()).dtype)
        if not self.options.labels:
            return self.model(pixel_values=x).logits
        return whole_logits(self.model, x).argmax(dim=1).to(self.label_dtype)  # upsampled in fp32, as segment()
