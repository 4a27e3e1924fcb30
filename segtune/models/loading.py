"""Load any segmentation checkpoint for inference: a directory or Hub id, segtune's or transformers' own."""

from __future__ import annotations

import os

from huggingface_hub.errors import HFValidationError, RepositoryNotFoundError
from huggingface_hub.utils import validate_repo_id
from transformers import AutoImageProcessor, AutoModelForSemanticSegmentation, PreTrainedModel, SegformerImageProcessor
from transformers.utils import CONFIG_NAME

from . import auto  # noqa: F401  (MixTransformer checkpoints load through the Auto classes)
from .mix_transformer import CheckpointError


def _check_directory(path: str) -> None:
    weights = [n for n in os.listdir(path) if n.endswith((".safetensors", ".bin"))]
    if not os.path.isfile(os.path.join(path, CONFIG_NAME)) or not weights:
        found = sorted(os.listdir(path))
        raise CheckpointError(
            f"{path}: not a model checkpoint; expected config.json and weights (*.safetensors), found {found}"
        )


def check_hub_id(model_id: str) -> None:
    """Refuse `model_id`, not a local directory, when it is no Hub repo id either: nothing to ask the Hub.

    Raises:
        CheckpointError: naming it.
    """
    try:
        validate_repo_id(model_id)
    except HFValidationError:
        raise CheckpointError(
            f"{model_id}: no such local directory (nor a Hub repo id of the form user/name)"
        ) from None


def load_for_inference(model_id: str, **kwargs) -> tuple[PreTrainedModel, SegformerImageProcessor]:
    """The model (eval mode) and the image processor saved with it.

    A checkpoint without an image processor gets transformers' default `SegformerImageProcessor`.

    Raises:
        CheckpointError: the directory lacks config or weights, or the repo does not exist.
    """
    if os.path.isdir(model_id):
        _check_directory(model_id)
    else:
        check_hub_id(model_id)
    try:
        model = AutoModelForSemanticSegmentation.from_pretrained(model_id, **kwargs).eval()
    except (RepositoryNotFoundError, HFValidationError) as error:
        raise CheckpointError(f"{model_id}: no such local directory or Hub repo ({type(error).__name__})") from None
    except OSError as error:
        raise CheckpointError(f"{model_id}: cannot load the model: {error}") from None
    try:
        processor = AutoImageProcessor.from_pretrained(model_id, **kwargs)
    except OSError:
        processor = SegformerImageProcessor()
    return model, processor


def load_processor(model: PreTrainedModel) -> SegformerImageProcessor:
    """The image processor saved beside a loaded model (`model.name_or_path`).

    Raises:
        CheckpointError: the model was not loaded from a checkpoint holding an image processor.
    """
    source = getattr(model, "name_or_path", "") or ""
    try:
        if source:
            return AutoImageProcessor.from_pretrained(source)
    except OSError:
        pass
    raise CheckpointError(
        f"{type(model).__name__} has no image processor to preprocess images with "
        f"({'none saved in ' + repr(source) if source else 'it was not loaded from a checkpoint'}); pass "
        "processor=AutoImageProcessor.from_pretrained(...) or SegformerImageProcessor(...)"
    )
