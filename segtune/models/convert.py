"""Checkpoint key maps: transformers Segformer and original NVlabs / mmsegmentation MiT checkpoints.

The Segformer map lives beside the model (remote code needs it); this module re-exports it and adds
the NVlabs and mmseg ones, which only segtune users need.

    state = torch.load("mit_b0.pth", map_location="cpu")
    encoder = MixTransformerModel(MixTransformerConfig.from_variant("mit-b0"))
    encoder.load_state_dict(convert_nvlabs_state_dict(state))
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

import torch

from .mix_transformer.convert_mix_transformer import (
    ENCODER_PREFIX,
    CheckpointError,
    check_state_dict,
    encoder_key,
    mix_transformer_state_dict,
    segformer_state_dict,
)

Tensors = dict[str, torch.Tensor]

# NVlabs mix_transformer.py (also mmseg 0.x): patch_embed{1..4}, block{1..4}.{j}, norm{1..4}; fused attn.kv.
_NVLABS_ENCODER = (
    (r"patch_embed(\d)\.(proj|norm)\.(\w+)", lambda m: f"stages.{_stage(m[1])}.patch_embed.{m[2]}.{m[3]}"),
    (
        r"block(\d)\.(\d+)\.mlp\.dwconv\.dwconv\.(\w+)",
        lambda m: f"stages.{_stage(m[1])}.blocks.{m[2]}.mlp.dwconv.{m[3]}",
    ),
    (r"block(\d)\.(\d+)\.(.+)", lambda m: f"stages.{_stage(m[1])}.blocks.{m[2]}.{m[3]}"),
    (r"norm(\d)\.(\w+)", lambda m: f"stages.{_stage(m[1])}.norm.{m[2]}"),
)
# NVlabs SegFormerHead: linear_c{1..4}.proj, linear_fuse = ConvModule(conv, bn), linear_pred.
_NVLABS_HEAD = (
    (r"decode_head\.linear_c(\d)\.proj\.(\w+)", lambda m: f"decode_head.linear_c.{_stage(m[1])}.{m[2]}"),
    (r"decode_head\.linear_fuse\.conv\.(\w+)", lambda m: f"decode_head.linear_fuse.{m[1]}"),
    (r"decode_head\.linear_fuse\.bn\.(\w+)", lambda m: f"decode_head.batch_norm.{m[1]}"),
    (r"decode_head\.linear_pred\.(\w+)", lambda m: f"decode_head.classifier.{m[1]}"),
)
# mmseg 1.x MixVisionTransformer (tools/model_converters/mit2mmseg.py): layers.{i}.{0 embed, 1 blocks, 2 norm};
# q, k, v stacked in one nn.MultiheadAttention in_proj; the Mix-FFN as 1x1 convs.
_MMSEG_ENCODER = (
    (r"layers\.(\d)\.0\.projection\.(\w+)", lambda m: f"stages.{m[1]}.patch_embed.proj.{m[2]}"),
    (r"layers\.(\d)\.0\.norm\.(\w+)", lambda m: f"stages.{m[1]}.patch_embed.norm.{m[2]}"),
    (r"layers\.(\d)\.1\.(\d+)\.attn\.attn\.out_proj\.(\w+)", lambda m: f"stages.{m[1]}.blocks.{m[2]}.attn.proj.{m[3]}"),
    (r"layers\.(\d)\.1\.(\d+)\.attn\.(sr|norm)\.(\w+)", lambda m: f"stages.{m[1]}.blocks.{m[2]}.attn.{m[3]}.{m[4]}"),
    (r"layers\.(\d)\.1\.(\d+)\.(norm1|norm2)\.(\w+)", lambda m: f"stages.{m[1]}.blocks.{m[2]}.{m[3]}.{m[4]}"),
    (r"layers\.(\d)\.1\.(\d+)\.ffn\.layers\.0\.(\w+)", lambda m: f"stages.{m[1]}.blocks.{m[2]}.mlp.fc1.{m[3]}"),
    (r"layers\.(\d)\.1\.(\d+)\.ffn\.layers\.1\.(\w+)", lambda m: f"stages.{m[1]}.blocks.{m[2]}.mlp.dwconv.{m[3]}"),
    (r"layers\.(\d)\.1\.(\d+)\.ffn\.layers\.4\.(\w+)", lambda m: f"stages.{m[1]}.blocks.{m[2]}.mlp.fc2.{m[3]}"),
    (r"layers\.(\d)\.2\.(\w+)", lambda m: f"stages.{m[1]}.norm.{m[2]}"),
)
_MMSEG_IN_PROJ = re.compile(r"layers\.(\d)\.1\.(\d+)\.attn\.attn\.in_proj_(weight|bias)")
# Tensors with no MixTransformer counterpart: ImageNet classifier, mmseg's unused conv_seg, auxiliary heads.
_DROPPED = re.compile(r"(head\.|decode_head\.conv_seg\.|auxiliary_head\.)")

Rules = tuple[tuple[str, Callable[[re.Match], str]], ...]


def _stage(one_based: str) -> int:
    return int(one_based) - 1


def _unwrap(checkpoint: Mapping) -> Tensors:
    """The tensors of a training checkpoint: `{"state_dict": ...}` (mmcv) or `{"model": ...}`, without `backbone.`."""
    for key in ("state_dict", "model"):
        if key in checkpoint and isinstance(checkpoint[key], Mapping):
            checkpoint = checkpoint[key]
    return {k.removeprefix("backbone."): v for k, v in checkpoint.items() if isinstance(v, torch.Tensor)}


def _apply(key: str, rules: Rules) -> str | None:
    for pattern, target in rules:
        match = re.fullmatch(pattern, key)
        if match:
            return target(match)
    return None


def _as_linear(key: str, tensor: torch.Tensor) -> torch.Tensor:
    # mmseg 1.x writes fc1 / fc2 as 1x1 convs: (out, in, 1, 1) -> (out, in)
    if re.search(r"mlp\.fc[12]\.weight$", key) and tensor.ndim == 4:
        return tensor.flatten(1)
    return tensor


def _split_in_proj(state: Tensors, out: Tensors) -> None:
    for key, tensor in state.items():
        match = _MMSEG_IN_PROJ.fullmatch(key)
        if match:
            size = tensor.shape[0] // 3
            prefix = f"stages.{match[1]}.blocks.{match[2]}.attn"
            out[f"{prefix}.q.{match[3]}"] = tensor[:size]
            out[f"{prefix}.kv.{match[3]}"] = tensor[size:]  # k then v, as the fused NVlabs kv


def convert_nvlabs_state_dict(checkpoint: Mapping, include_head: bool = False) -> Tensors:
    """Map an original NVlabs or mmsegmentation MiT checkpoint onto MixTransformer keys.

    Accepts the NVlabs / mmseg 0.x layout (`patch_embed1.proj.weight`, `block1.0.attn.kv.weight`,
    `norm1.weight`) and the mmseg 1.x one (`layers.0.1.0.attn.attn.in_proj_weight`), bare or wrapped
    in `{"state_dict": ...}` and prefixed with `backbone.`. An ImageNet `head.*` is dropped.

    With `include_head=False` the result fits `MixTransformerModel` (encoder keys, no prefix; any
    `decode_head.*` is left out). With
    `include_head=True` it fits `MixTransformerForSemanticSegmentation`: encoder keys get the
    `mix_transformer.` prefix and an NVlabs `SegFormerHead` maps onto the decode head.

    Raises:
        CheckpointError: a tensor has no MixTransformer counterpart (named), e.g. mmseg 1.x's
            `SegformerHead`, whose per-stage ConvModules differ from the paper's MLP head.
    """
    state = _unwrap(checkpoint)
    converted: Tensors = {}
    _split_in_proj(state, converted)
    unknown = []
    for key, tensor in state.items():
        if _DROPPED.match(key) or _MMSEG_IN_PROJ.fullmatch(key):
            continue
        if key.startswith("decode_head."):
            if include_head:
                new = _apply(key, _NVLABS_HEAD)
                unknown += [key] if new is None else []
                converted.update({new: tensor} if new else {})
            continue
        new = _apply(key, _NVLABS_ENCODER) or _apply(key, _MMSEG_ENCODER)
        if new is None:
            unknown.append(key)
        else:
            converted[new] = _as_linear(new, tensor)
    if unknown:
        raise CheckpointError(
            f"NVlabs/mmseg checkpoint: {len(unknown)} tensors have no MixTransformer counterpart: {unknown[:8]}"
        )
    if include_head:
        converted = {encoder_key(k, ENCODER_PREFIX): v for k, v in converted.items()}
    return converted


__all__ = [
    "CheckpointError",
    "check_state_dict",
    "convert_nvlabs_state_dict",
    "mix_transformer_state_dict",
    "segformer_state_dict",
]
