"""ONNX Runtime as an inference backend: an exported model.onnx that looks like the PyTorch model to segtune.

    model, processor = load_onnx("outputs/demo/onnx")        # or the model.onnx file itself
    model(pixel_values=pixels).logits                          # a torch tensor, on the input's device

`OnnxRuntimeModel` answers `model(pixel_values=...).logits` and carries the `config` saved beside the graph,
so the whole-image, sliding-window and TTA code of segtune/inference.py, the evaluation and `segtune predict`
run it unchanged. onnxruntime is an optional extra: `pip install "segtune[onnx]"`.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn
from transformers import AutoImageProcessor, PretrainedConfig, SegformerImageProcessor
from transformers.modeling_outputs import SemanticSegmenterOutput
from transformers.utils import CONFIG_NAME, IMAGE_PROCESSOR_NAME

from ..errors import ExportError
from ..models.mix_transformer import CheckpointError

MODEL_FILE = "model.onnx"
INSTALL = 'pip install "segtune[onnx]"'


def import_optional(name: str, needed_by: str) -> ModuleType:
    """The module `name` of the `onnx` extra.

    Raises:
        ExportError: it is not installed (the message says how to install it).
    """
    try:
        return importlib.import_module(name)
    except ImportError:
        raise ExportError(f"{needed_by} needs the {name} package, which is not installed: {INSTALL}") from None


def find_model_file(path: str | Path) -> Path:
    """`path` itself, or the model.onnx inside the folder `path`.

    Raises:
        CheckpointError: no such file, or a folder without model.onnx.
    """
    path = Path(path)
    if path.is_dir():
        if not (path / MODEL_FILE).is_file():
            found = sorted(p.name for p in path.iterdir())
            raise CheckpointError(
                f"{path}: no {MODEL_FILE} in this folder, found {found}; write one with `segtune export`"
            )
        return path / MODEL_FILE
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file; expected an exported {MODEL_FILE} or the folder holding it")
    return path


def open_session(path: str | Path, providers: Sequence[str] | None = None, threads: int | None = None) -> Any:
    """An `onnxruntime.InferenceSession` of the model.onnx at `path` (a file or its folder).

    `providers` default to CUDA where onnxruntime has it, then the CPU; `threads` (intra-op) to ONNX Runtime's
    own choice, one per physical core.

    Raises:
        CheckpointError: the file is missing, corrupt, or not an ONNX model (named).
        ExportError: onnxruntime is not installed.
    """
    ort = import_optional("onnxruntime", "ONNX Runtime inference")
    file = find_model_file(path)
    options = ort.SessionOptions()
    # Errors only: an fp16 graph logs a warning per node that ORT's CPU kernels cannot constant-fold.
    options.log_severity_level = 3
    if threads is not None:
        options.intra_op_num_threads = threads
    if providers is None:
        cuda = "CUDAExecutionProvider" in ort.get_available_providers()
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if cuda else ["CPUExecutionProvider"]
    state = ort.capi.onnxruntime_pybind11_state
    try:
        return ort.InferenceSession(str(file), options, providers=list(providers))
    except (state.InvalidProtobuf, state.InvalidGraph, state.Fail, state.NoSuchFile) as error:
        reason = str(error).strip().splitlines()[0]
        if file.suffix == ".onnx":
            raise CheckpointError(
                f"{file}: corrupt ONNX model, ONNX Runtime cannot load it ({reason}); export it again with "
                "`segtune export`"
            ) from None
        raise CheckpointError(
            f"{file}: not an ONNX model; expected the {MODEL_FILE} that `segtune export` writes, or its folder "
            f"(ONNX Runtime: {reason})"
        ) from None


def saved_config(folder: Path, num_labels: int | None) -> PretrainedConfig:
    """The config.json saved beside the graph (class names, palette), read without any model code; else a
    config with `num_labels` classes.

    Raises:
        CheckpointError: there is no config.json and the graph's class count is not fixed.
    """
    if (folder / CONFIG_NAME).is_file():
        return PretrainedConfig.from_json_file(str(folder / CONFIG_NAME))
    if not isinstance(num_labels, int):
        raise CheckpointError(f"{folder}: no {CONFIG_NAME} beside the graph, and the graph's class count is not fixed")
    return PretrainedConfig(num_labels=num_labels)


class OnnxRuntimeModel(nn.Module):
    """An ONNX Runtime session in the shape of a segmentation model: `model(pixel_values=...).logits`.

    `providers` and `threads` are `open_session`'s.

    It runs graphs exported without `--preprocess` and `--labels` (float pixel values in, logits out), which
    is what sliding windows and TTA average. Inputs are cast to the graph's precision (fp16 for `--half`),
    copied to the host and back: the logits come back on the input's device.
    """

    def __init__(self, path: str | Path, providers: Sequence[str] | None = None, threads: int | None = None) -> None:
        """Open the graph at `path` (model.onnx or its folder) and read the config.json beside it.

        Raises:
            CheckpointError: the file is missing or not a readable ONNX model, or its graph does not take
                float pixel values and return logits.
            ExportError: onnxruntime is not installed.
        """
        super().__init__()
        self.path = find_model_file(path)
        self.session = open_session(self.path, providers, threads)
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or inputs[0].type not in _FLOAT_TYPES or len(outputs[0].shape) != 4:
            found = ", ".join(f"{i.name} {i.type} {i.shape}" for i in inputs)
            raise CheckpointError(
                f"{self.path}: takes {found} and returns {outputs[0].name} {outputs[0].type} {outputs[0].shape}; "
                "segtune's inference needs a graph from float pixel_values to logits: export it without "
                "--preprocess and --labels"
            )
        self.input_name, self.output_name = inputs[0].name, outputs[0].name
        self.input_dtype = _FLOAT_TYPES[inputs[0].type]
        self.config = saved_config(self.path.parent, outputs[0].shape[1])
        self.name_or_path = str(self.path.parent)  # where `load_processor` looks for the image processor

    def forward(self, pixel_values: torch.Tensor, **kwargs: Any) -> SemanticSegmenterOutput:
        """Return the graph's logits (B, K, h, w) for `pixel_values` (B, 3, H, W), on the input's device."""
        feed = pixel_values.detach().to("cpu", self.input_dtype).contiguous().numpy()
        (logits,) = self.session.run([self.output_name], {self.input_name: feed})
        return SemanticSegmenterOutput(logits=torch.from_numpy(logits).to(pixel_values.device))

    def extra_repr(self) -> str:
        return f"path={str(self.path)!r}, providers={self.session.get_providers()}"


_FLOAT_TYPES = {"tensor(float)": torch.float32, "tensor(float16)": torch.float16}


def load_onnx(path: str | Path, providers: Sequence[str] | None = None) -> tuple[OnnxRuntimeModel, Any]:
    """The exported model at `path` (model.onnx, or the folder `segtune export` wrote) and the image processor
    saved beside it (transformers' default `SegformerImageProcessor` if there is none, as for checkpoints).

    Raises:
        CheckpointError: the file is missing or not a readable ONNX model, or its graph is not float pixel
            values to logits.
        ExportError: onnxruntime is not installed.
    """
    model = OnnxRuntimeModel(path, providers)
    folder = model.path.parent
    if (folder / IMAGE_PROCESSOR_NAME).is_file():
        return model, AutoImageProcessor.from_pretrained(str(folder))
    return model, SegformerImageProcessor()


__all__ = ["MODEL_FILE", "OnnxRuntimeModel", "find_model_file", "import_optional", "load_onnx", "open_session"]
