"""Key maps between MixTransformer and transformers' Segformer, and loading Segformer checkpoints.

Lives beside the modeling file (not in segtune.models.convert) because `from_pretrained` needs it in
Hub remote code too, where only torch, transformers and sibling files can be imported.

A Segformer checkpoint is loaded through transformers' own Segformer class first, so its
transformers-4 key layout (the `nvidia/*` files) is renamed by transformers' conversion mapping (the
`SegformerModel` / `SegformerForSemanticSegmentation` entries of `transformers/conversion_mapping.py`);
the one table below (`_KEY_PAIRS`) then maps transformers-5 names to MixTransformer's, in both directions.

Why the table stays, rather than a transformers-5 conversion mapping (`WeightRenaming`, and
`WeightConverter` with `Concatenate(dim=0)` to fuse `k_proj` + `v_proj` into `kv`), as tried on 5.24:
- There is no per-class hook (no `_checkpoint_conversion_mapping` class attribute is read); the only
  entry point is the process-global `transformers.conversion_mapping.register_checkpoint_conversion_mapping`
  (by class name or model_type). Remote code could call it at import: names registered that way are exempt
  from the `is_custom_code()` skip in `get_model_conversion_mapping`. Loading then works: both key layouts
  loaded straight into MixTransformerForSemanticSegmentation, logits within 2e-8 of Segformer's.
- But `save_pretrained` (`save_original_format=True` by default) reverts the registered mapping through
  `revert_weight_conversion`, even for a model never loaded from a checkpoint. A mapping that accepts two
  layouts has no unique inverse: a fresh model saved keys such as `attention.self.key.bias` (prefix lost)
  and `decode_head.linear_.0.proj.weight`. Saving segtune's own layout needs `save_original_format=False`.
- The other direction (`segformer_state_dict`: `to_segformer()`, pushing in Segformer format) and
  state-dict conversion (`mix_transformer_state_dict`) would still need code of their own: transformers
  applies a mapping only inside `from_pretrained`, and its reverse is the ill-formed one above. The
  correspondence would be written twice, and the config conversion, head policy and `CheckpointError`
  checks below stay, so nothing gets shorter.
"""

from __future__ import annotations

import copy
import logging
import os
import re
from typing import Any

import torch
from transformers import (
    PreTrainedConfig,
    SegformerConfig,
    SegformerForImageClassification,
    SegformerForSemanticSegmentation,
    SegformerModel,
)

logger = logging.getLogger(__name__)

ENCODER_PREFIX = "mix_transformer."
SEGFORMER_PREFIX = "segformer."

# (MixTransformer key, transformers-5 Segformer key); {s} is a stage index, {b} a block index.
# The fused `attn.kv` <-> `attention.k_proj` + `attention.v_proj` pair is handled apart.
_KEY_PAIRS = (
    ("stages.{s}.patch_embed.proj.", "stages.{s}.patch_embeddings.proj."),
    ("stages.{s}.patch_embed.norm.", "stages.{s}.patch_embeddings.layer_norm."),
    ("stages.{s}.blocks.{b}.norm1.", "stages.{s}.blocks.{b}.layernorm_before."),
    ("stages.{s}.blocks.{b}.attn.q.", "stages.{s}.blocks.{b}.attention.q_proj."),
    ("stages.{s}.blocks.{b}.attn.proj.", "stages.{s}.blocks.{b}.attention.o_proj."),
    ("stages.{s}.blocks.{b}.attn.sr.", "stages.{s}.blocks.{b}.attention.sequence_reduction.sequence_reduction."),
    ("stages.{s}.blocks.{b}.attn.norm.", "stages.{s}.blocks.{b}.attention.sequence_reduction.layer_norm."),
    ("stages.{s}.blocks.{b}.norm2.", "stages.{s}.blocks.{b}.layernorm_after."),
    ("stages.{s}.blocks.{b}.mlp.fc1.", "stages.{s}.blocks.{b}.mlp.fc1."),
    ("stages.{s}.blocks.{b}.mlp.dwconv.", "stages.{s}.blocks.{b}.mlp.dwconv.dwconv."),
    ("stages.{s}.blocks.{b}.mlp.fc2.", "stages.{s}.blocks.{b}.mlp.fc2."),
    ("stages.{s}.norm.", "stages.{s}.layer_norm."),
    ("decode_head.linear_c.{s}.", "decode_head.linear_projections.{s}.proj."),
    ("decode_head.linear_fuse.", "decode_head.linear_fuse."),
    ("decode_head.batch_norm.", "decode_head.batch_norm."),
    ("decode_head.classifier.", "decode_head.classifier."),
)
_OURS_KV = "stages.{s}.blocks.{b}.attn.kv."
_HF_K, _HF_V = "stages.{s}.blocks.{b}.attention.k_proj.", "stages.{s}.blocks.{b}.attention.v_proj."

# SegformerForImageClassification's ImageNet classifier: no counterpart in a segmentation model.
_IMAGENET_HEAD = re.compile(r"^classifier\.")

_HUB_KWARGS = ("cache_dir", "force_download", "local_files_only", "token", "revision", "subfolder", "proxies")
_STOCK_CLASSES = {
    cls.__name__: cls for cls in (SegformerModel, SegformerForImageClassification, SegformerForSemanticSegmentation)
}


class CheckpointError(ValueError):
    """A checkpoint or state dict that does not fit the model it is loaded into."""


def _pattern(template: str) -> re.Pattern:
    body = re.escape(template).replace(r"\{s\}", r"(?P<s>\d+)").replace(r"\{b\}", r"(?P<b>\d+)")
    return re.compile(f"^{body}(?P<rest>[^.]+)$")


_FORWARD = [(_pattern(hf), ours) for ours, hf in _KEY_PAIRS]  # Segformer -> ours
_BACKWARD = [(_pattern(ours), hf) for ours, hf in _KEY_PAIRS]  # ours -> Segformer


def _rename(key: str, rules: list[tuple[re.Pattern, str]]) -> str | None:
    for pattern, template in rules:
        match = pattern.match(key)
        if match:
            return template.format(**match.groupdict()) + match["rest"]
    return None


def encoder_key(key: str, prefix: str) -> str:
    """`key` under the model's encoder `prefix` when it names an encoder tensor (`stages.*`); head keys stay bare."""
    return prefix + key if key.startswith("stages.") else key


def _put(converted: dict, unknown: list, key: str, new: str | None, prefix: str, tensor: torch.Tensor) -> None:
    """Store `tensor` under its renamed key (encoder keys keep the model prefix), or note `key` as unknown."""
    if new is None:
        unknown.append(key)
    else:
        converted[encoder_key(new, prefix)] = tensor


def _refuse_unknown(unknown: list[str], source: str, target: str) -> None:
    if unknown:
        raise CheckpointError(f"{source} state dict: {len(unknown)} keys have no {target} counterpart: {unknown[:8]}")


def _strip(key: str, prefix: str) -> tuple[str, bool]:
    return (key[len(prefix) :], True) if key.startswith(prefix) else (key, False)


def mix_transformer_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Convert a transformers-5 Segformer state dict to MixTransformer keys.

    Encoder keys come back with the `mix_transformer.` prefix when they had `segformer.`, and without
    one when they had none (a `SegformerModel`). Key and value projections are fused into `attn.kv`.
    An ImageNet `classifier.*` head is dropped.

    Raises:
        CheckpointError: a key has no MixTransformer counterpart, or a key/value pair is incomplete.
    """
    converted, unknown, pending = {}, [], {}
    k_pattern, v_pattern = _pattern(_HF_K), _pattern(_HF_V)
    for key, tensor in state_dict.items():
        bare, prefixed = _strip(key, SEGFORMER_PREFIX)
        prefix = ENCODER_PREFIX if prefixed else ""
        if _IMAGENET_HEAD.match(key):
            continue
        kv = k_pattern.match(bare) or v_pattern.match(bare)
        if kv:
            slot = 0 if k_pattern.match(bare) else 1
            target = prefix + _OURS_KV.format(s=kv["s"], b=kv["b"]) + kv["rest"]
            pending.setdefault(target, [None, None])[slot] = tensor
            continue
        _put(converted, unknown, key, _rename(bare, _FORWARD), prefix, tensor)
    _refuse_unknown(unknown, "Segformer", "MixTransformer")
    for target, (key, value) in pending.items():
        if key is None or value is None:
            raise CheckpointError(f"Segformer state dict: {target} needs both key and value projections, found one")
        converted[target] = torch.cat([key, value], dim=0)  # (2C, C) or (2C,)
    return converted


def segformer_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Convert a MixTransformer state dict to transformers-5 Segformer keys (the inverse of `mix_transformer_state_dict`).

    Raises:
        CheckpointError: a key has no Segformer counterpart.
    """
    converted, unknown = {}, []
    kv_pattern = _pattern(_OURS_KV)
    for key, tensor in state_dict.items():
        bare, prefixed = _strip(key, ENCODER_PREFIX)
        prefix = SEGFORMER_PREFIX if prefixed else ""
        kv = kv_pattern.match(bare)
        if kv:
            key_part, value_part = tensor.chunk(2, dim=0)
            converted[prefix + _HF_K.format(s=kv["s"], b=kv["b"]) + kv["rest"]] = key_part
            converted[prefix + _HF_V.format(s=kv["s"], b=kv["b"]) + kv["rest"]] = value_part
            continue
        _put(converted, unknown, key, _rename(bare, _BACKWARD), prefix, tensor)
    _refuse_unknown(unknown, "MixTransformer", "Segformer")
    return converted


def check_state_dict(model: torch.nn.Module, state_dict: dict[str, torch.Tensor], source: str) -> list[str]:
    """Check that `state_dict` fits `model` key for key and shape for shape; return the model's missing keys.

    Raises:
        CheckpointError: unexpected keys, or tensors whose shape differs, each named with both shapes.
    """
    expected = model.state_dict()
    unexpected = sorted(set(state_dict) - set(expected))
    if unexpected:
        raise CheckpointError(
            f"{source}: {len(unexpected)} keys do not exist in {type(model).__name__}: {unexpected[:8]}"
        )
    wrong = [
        f"{key}: expected {tuple(expected[key].shape)}, found {tuple(tensor.shape)}"
        for key, tensor in state_dict.items()
        if tuple(tensor.shape) != tuple(expected[key].shape)
    ]
    if wrong:
        raise CheckpointError(
            f"{source} does not fit {type(model).__name__} ({model.config_class.__name__} differs?): "
            + "; ".join(wrong[:8])
        )
    return sorted(set(expected) - set(state_dict))


def _load_stock(path: str | os.PathLike, hub: dict[str, Any]) -> tuple[SegformerConfig, dict[str, torch.Tensor]]:
    """Load a Segformer checkpoint with transformers (either key layout); return its config and state dict."""
    config = SegformerConfig.from_pretrained(path, **hub)
    architecture = (config.architectures or ["SegformerModel"])[0]
    stock_class = _STOCK_CLASSES.get(architecture, SegformerModel)
    model, info = stock_class.from_pretrained(path, config=config, output_loading_info=True, **hub)
    problems = {
        k: sorted(map(str, v))
        for k, v in info.items()
        if k in ("missing_keys", "unexpected_keys", "mismatched_keys") and v
    }
    if problems:
        raise CheckpointError(f"{path}: the Segformer checkpoint does not load cleanly as {architecture}: {problems}")
    return config, model.state_dict()


def _split_kwargs(kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    hub = {k: kwargs.pop(k) for k in _HUB_KWARGS if k in kwargs}
    load_keys = ("dtype", "torch_dtype", "output_loading_info", "config", "attn_implementation")
    load = {k: kwargs.pop(k) for k in load_keys if k in kwargs}
    kwargs.pop("ignore_mismatched_sizes", None)  # a classifier of another size is always re-initialised
    kwargs.pop("trust_remote_code", None)
    return hub, load, kwargs


def _fit_head(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], str]:
    """Key the state for `model`; drop what it cannot take. Return the state and why a head may be missing."""
    if not hasattr(model, "decode_head"):  # a bare encoder: no head, no prefix
        return {k.removeprefix(ENCODER_PREFIX): v for k, v in state.items() if not k.startswith("decode_head.")}, ""
    state = {encoder_key(k, ENCODER_PREFIX): v for k, v in state.items()}
    found = state.get("decode_head.classifier.weight")
    if found is None:
        return state, "the checkpoint has no decode head"
    expected = model.config.num_labels
    if found.shape[0] != expected:
        state = {k: v for k, v in state.items() if not k.startswith("decode_head.classifier.")}
        return state, f"the checkpoint's classifier has {found.shape[0]} labels and the model asks for {expected}"
    return state, ""


def load_segformer_checkpoint(cls: type, path: str | os.PathLike, *args: Any, **kwargs: Any) -> Any | None:
    """Build `cls` from a transformers Segformer checkpoint; return None for a MixTransformer checkpoint.

    Raises:
        CheckpointError: the checkpoint is neither Segformer nor MixTransformer, or does not fit.
    """
    hub, load, overrides = _split_kwargs(dict(kwargs))
    try:
        config_dict, _ = PreTrainedConfig.get_config_dict(path, **hub)
    except OSError:
        return None  # transformers' own from_pretrained reports a missing or unreachable checkpoint
    model_type = config_dict.get("model_type")
    if model_type == cls.config_class.model_type:
        return None
    if model_type != "segformer":
        raise CheckpointError(
            f"{path}: expected a checkpoint of model_type 'mix_transformer' or 'segformer', found {model_type!r}"
        )
    source_config, source_state = _load_stock(path, hub)
    given = load.get("config")
    # As transformers' from_pretrained: a given config is copied, and attn_implementation is checked by the model.
    config = copy.deepcopy(given) if given is not None else cls.config_class.from_segformer(source_config, **overrides)
    if "attn_implementation" in load:
        config._attn_implementation = load["attn_implementation"]
    model = cls(config, *args)
    state, reason = _fit_head(model, mix_transformer_state_dict(source_state))
    missing = check_state_dict(model, state, str(path))
    if any(not k.startswith("decode_head.") for k in missing):
        raise CheckpointError(f"{path}: encoder tensors missing from the checkpoint: {missing[:8]}")
    if missing:
        modules = sorted({k.rsplit(".", 1)[0] for k in missing})
        logger.warning(f"{path}: {reason}, so these are freshly initialised: {modules}. Fine-tune before use.")
    model.load_state_dict(state, strict=False)
    dtype = load.get("dtype") or load.get("torch_dtype")
    model = model.to(dtype=dtype) if isinstance(dtype, torch.dtype) else model
    model.eval()
    if load.get("output_loading_info"):
        return model, {"missing_keys": missing, "unexpected_keys": [], "mismatched_keys": [], "error_msgs": []}
    return model
