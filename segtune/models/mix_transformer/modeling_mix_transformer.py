"""MixTransformer (MiT), the SegFormer encoder, and its all-MLP decode head.

Re-implemented after the SegFormer paper (arXiv 2105.15203) and NVlabs' mix_transformer.py, with the
parameter names of NVlabs / timm pvt_v2 (`attn.q`, fused `attn.kv`, `mlp.dwconv` ...). Outputs follow
transformers' `SegformerModel` / `SegformerForSemanticSegmentation` exactly.

Tokens are kept as (B, N, C) with N = H * W in row-major order, which is the memory layout of a
channels-last (B, C, H, W) image. Every switch between the two views is therefore a stride change,
never a copy, and the convolutions run on channels-last inputs.

This folder is uploaded unchanged as Hub remote code: it imports only torch, transformers and its
sibling files.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.backbone_utils import BackboneMixin
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BackboneOutput, BaseModelOutput, SemanticSegmenterOutput
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.segformer.modeling_segformer import eager_attention_forward

from .configuration_mix_transformer import MixTransformerConfig
from .convert_mix_transformer import load_segformer_checkpoint, segformer_state_dict


def tokens_to_image(tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(B, H*W, C) -> (B, C, H, W) as a channels-last view: no copy."""
    batch, _, channels = tokens.shape
    return tokens.view(batch, height, width, channels).permute(0, 3, 1, 2)


def image_to_tokens(image: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, H*W, C); a view when `image` is channels-last."""
    return image.flatten(2).transpose(1, 2)


class DropPath(nn.Module):
    """Stochastic depth: drop the whole residual branch per sample (Huang et al., 2016).

    Written here rather than taken from torchvision because Hub remote code may import only torch and
    transformers.
    """

    def __init__(self, drop_prob: float) -> None:
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask.div_(keep)

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"


class OverlapPatchEmbed(nn.Module):
    """Overlapped patch merging: a strided conv whose kernel is larger than its stride, then LayerNorm."""

    def __init__(self, patch_size: int, stride: int, in_channels: int, hidden_size: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, hidden_size, patch_size, stride, padding=patch_size // 2)
        # NVlabs keeps LayerNorm's default epsilon here, unlike the blocks' norms.
        self.norm = nn.LayerNorm(hidden_size)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        image = self.proj(image)  # (B, C, H', W')
        height, width = image.shape[-2:]
        return self.norm(image_to_tokens(image)), height, width  # (B, N, C)


class EfficientSelfAttention(nn.Module):
    """Multi-head self-attention whose keys and values come from a sequence shrunk R*R times by a strided conv.

    The attention itself runs through transformers' attention interface, so `config._attn_implementation`
    picks it ("sdpa" by default, or "eager", which also returns the weights), as in transformers' Segformer.
    """

    def __init__(self, config: MixTransformerConfig, hidden_size: int, num_heads: int, sr_ratio: int) -> None:
        super().__init__()
        self.config = config  # read at every call, so `set_attn_implementation` takes effect at once
        self.num_heads = num_heads
        self.head_dim = hidden_size // num_heads
        self.scaling = self.head_dim**-0.5
        self.attention_dropout = config.attention_probs_dropout_prob
        self.is_causal = False  # transformers' SDPA function reads this, and assumes causal without it
        self.q = nn.Linear(hidden_size, hidden_size)
        # One fused projection for keys and values, as NVlabs: one GEMM instead of two.
        self.kv = nn.Linear(hidden_size, 2 * hidden_size)
        self.proj = nn.Linear(hidden_size, hidden_size)
        drop = config.hidden_dropout_prob
        self.proj_drop = nn.Dropout(drop) if drop > 0 else nn.Identity()
        self.sr_ratio = sr_ratio
        if sr_ratio > 1:
            self.sr = nn.Conv2d(hidden_size, hidden_size, sr_ratio, sr_ratio)
            self.norm = nn.LayerNorm(hidden_size)

    def _reduced(self, x: torch.Tensor, height: int, width: int) -> torch.Tensor:
        if self.sr_ratio == 1:
            return x
        return self.norm(image_to_tokens(self.sr(tokens_to_image(x, height, width))))  # (B, N/R^2, C)

    def forward(
        self, x: torch.Tensor, height: int, width: int, output_attentions: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Return the attended tokens (B, N, C) and, from implementations that compute them, the weights (B, h, N, M)."""
        batch, length, channels = x.shape
        q = self.q(x).view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)  # (B, h, N, d)
        kv = self.kv(self._reduced(x, height, width))  # (B, M, 2C)
        k, v = kv.view(batch, -1, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)  # (B, h, M, d)
        attention = ALL_ATTENTION_FUNCTIONS.get_interface(self.config._attn_implementation, eager_attention_forward)
        # `output_attentions` lets transformers' SDPA function warn, as on stock Segformer, that it has no weights.
        out, weights = attention(
            self,
            q,
            k,
            v,
            None,
            dropout=self.attention_dropout if self.training else 0.0,
            scaling=self.scaling,
            output_attentions=output_attentions,
        )  # (B, N, h, d), (B, h, N, M) or None
        return self.proj_drop(self.proj(out.reshape(batch, length, channels))), weights


class MixFFN(nn.Module):
    """Linear, 3x3 depthwise conv (the positional signal that replaces position embeddings), GELU, Linear."""

    def __init__(self, hidden_size: int, ffn_size: int, act: str, drop: float) -> None:
        super().__init__()
        self.fc1 = nn.Linear(hidden_size, ffn_size)
        self.dwconv = nn.Conv2d(ffn_size, ffn_size, 3, 1, 1, groups=ffn_size)
        self.act = ACT2FN[act]
        self.fc2 = nn.Linear(ffn_size, hidden_size)
        self.drop = nn.Dropout(drop) if drop > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, height: int, width: int) -> torch.Tensor:
        x = self.dwconv(tokens_to_image(self.fc1(x), height, width))  # (B, 4C, H, W), channels-last
        x = self.drop(self.act(image_to_tokens(x)))  # (B, N, 4C)
        return self.drop(self.fc2(x))


class MixTransformerBlock(GradientCheckpointingLayer):
    """Pre-norm transformer block: efficient self-attention and Mix-FFN, each with stochastic depth."""

    def __init__(self, config: MixTransformerConfig, stage: int, drop_path: float) -> None:
        super().__init__()
        size = config.hidden_sizes[stage]
        self.norm1 = nn.LayerNorm(size, eps=config.layer_norm_eps)
        self.attn = EfficientSelfAttention(config, size, config.num_attention_heads[stage], config.sr_ratios[stage])
        self.norm2 = nn.LayerNorm(size, eps=config.layer_norm_eps)
        ffn_size = int(size * config.mlp_ratios[stage])
        self.mlp = MixFFN(size, ffn_size, config.hidden_act, config.hidden_dropout_prob)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(
        self, x: torch.Tensor, height: int, width: int, output_attentions: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        attended, weights = self.attn(self.norm1(x), height, width, output_attentions)
        x = x + self.drop_path(attended)
        x = x + self.drop_path(self.mlp(self.norm2(x), height, width))
        return x, weights


class MixTransformerStage(nn.Module):
    """Overlapped patch merging, `depth` blocks, then a closing LayerNorm."""

    def __init__(self, config: MixTransformerConfig, stage: int, drop_paths: list[float]) -> None:
        super().__init__()
        in_channels = config.num_channels if stage == 0 else config.hidden_sizes[stage - 1]
        self.patch_embed = OverlapPatchEmbed(
            config.patch_sizes[stage], config.strides[stage], in_channels, config.hidden_sizes[stage]
        )
        self.blocks = nn.ModuleList(MixTransformerBlock(config, stage, p) for p in drop_paths)
        self.norm = nn.LayerNorm(config.hidden_sizes[stage], eps=config.layer_norm_eps)

    def forward(self, image: torch.Tensor, output_attentions: bool = False) -> tuple[torch.Tensor, tuple]:
        x, height, width = self.patch_embed(image)  # (B, N, C)
        attentions = ()
        for block in self.blocks:
            x, weights = block(x, height, width, output_attentions)
            attentions += (weights,) if output_attentions and weights is not None else ()
        return tokens_to_image(self.norm(x), height, width), attentions  # (B, C, H, W), channels-last


class MixTransformerPreTrainedModel(PreTrainedModel):
    """Weight init, Auto registration and Segformer-checkpoint loading shared by every MiT model."""

    config_class = MixTransformerConfig
    base_model_prefix = "mix_transformer"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    _no_split_modules = ["MixTransformerBlock"]
    _supports_sdpa = True

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        # NVlabs: truncated normal for linears, fan-out He init for convs, identity norms.
        if isinstance(module, nn.Linear):
            init.trunc_normal_(module.weight, std=self.config.initializer_range)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Conv2d) and module is getattr(
            getattr(self, "decode_head", None), "classifier", None
        ):
            # mmseg's decode heads start their classifier at std 0.01: small logits, a calm first step.
            init.normal_(module.weight, mean=0.0, std=0.01)
            init.zeros_(module.bias)
        elif isinstance(module, nn.Conv2d):
            fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels // module.groups
            init.normal_(module.weight, mean=0.0, std=(2.0 / fan_out) ** 0.5)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, (nn.LayerNorm, nn.BatchNorm2d)):
            init.ones_(module.weight)
            init.zeros_(module.bias)
            if isinstance(module, nn.BatchNorm2d):
                init.zeros_(module.running_mean)
                init.ones_(module.running_var)
                init.zeros_(module.num_batches_tracked)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, *args: Any, **kwargs: Any):
        """Load a MixTransformer checkpoint, or convert a transformers Segformer one on the fly.

        A checkpoint whose config has `model_type == "segformer"` (`SegformerModel`,
        `SegformerForImageClassification` such as `nvidia/mit-b0`, `SegformerForSemanticSegmentation`;
        transformers 4 or 5 key layout) is loaded with transformers, then its config and weights are
        converted. Config overrides such as `num_labels` and `id2label` apply to the converted config.

        Raises:
            CheckpointError: the checkpoint is of another model type or its weights do not fit.
        """
        converted = load_segformer_checkpoint(cls, pretrained_model_name_or_path, *args, **kwargs)
        if converted is not None:
            return converted
        return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)

    def save_pretrained(self, save_directory: str | os.PathLike, *args: Any, **kwargs: Any) -> None:
        """`PreTrainedModel.save_pretrained`, writing an `auto_map` for every MiT Auto class.

        `register_for_auto_class` records one Auto class per model class; listing all of them lets
        `AutoModel`, `AutoBackbone` and `AutoModelForSemanticSegmentation` load any saved MiT
        checkpoint with `trust_remote_code=True`.
        """
        self.config.auto_map = dict(AUTO_MAP)
        super().save_pretrained(save_directory, *args, **kwargs)


def drop_path_schedule(config: MixTransformerConfig) -> list[list[float]]:
    """Stochastic-depth rate of every block, rising linearly from 0 to `drop_path_rate`, grouped by stage."""
    total = sum(config.depths)
    rates = [config.drop_path_rate * i / max(total - 1, 1) for i in range(total)]
    starts = [sum(config.depths[:s]) for s in range(config.num_encoder_blocks)]
    return [rates[start : start + depth] for start, depth in zip(starts, config.depths)]


class MixTransformerModel(MixTransformerPreTrainedModel):
    """The hierarchical MiT encoder: feature maps at 1/4, 1/8, 1/16 and 1/32 of the input."""

    def __init__(self, config: MixTransformerConfig) -> None:
        super().__init__(config)
        self.stages = nn.ModuleList(
            MixTransformerStage(config, s, rates) for s, rates in enumerate(drop_path_schedule(config))
        )
        self.post_init()

    def _check_input(self, pixel_values: torch.Tensor) -> None:
        if pixel_values.ndim != 4 or pixel_values.shape[1] != self.config.num_channels:
            raise ValueError(
                f"pixel_values: expected shape (batch, {self.config.num_channels}, height, width) as "
                f"config.num_channels={self.config.num_channels}, found {tuple(pixel_values.shape)}"
            )

    def forward(
        self,
        pixel_values: torch.Tensor,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> BaseModelOutput | tuple:
        """Return `last_hidden_state` (B, C4, H/32, W/32); `hidden_states` holds the four stage outputs."""
        self._check_input(pixel_values)
        output_attentions = _default(output_attentions, self.config.output_attentions)
        output_hidden_states = _default(output_hidden_states, self.config.output_hidden_states)
        # Channels-last from the first conv on, so no stage ever copies between layouts.
        x = pixel_values.contiguous(memory_format=torch.channels_last)
        hidden_states, attentions = (), ()
        for stage in self.stages:
            x, stage_attentions = stage(x, output_attentions)
            hidden_states += (x,)
            attentions += stage_attentions
        output = BaseModelOutput(
            last_hidden_state=x,
            hidden_states=hidden_states if output_hidden_states else None,
            attentions=attentions if output_attentions else None,
        )
        return output if _default(return_dict, self.config.return_dict) else output.to_tuple()


class MixTransformerDecodeHead(nn.Module):
    """SegFormer's all-MLP decoder, computed without its 4*D-channel concatenation at 1/4 scale.

    The reference head projects stage i to D channels (`linear_c[i]`), upsamples it to 1/4 scale,
    concatenates the four maps (stage 4 first) and fuses them with a 1x1 conv. Projection, fusion and
    bilinear upsampling are all linear and upsampling acts on space only, so they commute: fold each
    stage's slice of the fuse weight into its projection, apply it at the stage's own resolution,
    upsample the D-channel result and sum. Same parameters, same function, a fraction of the work.
    """

    def __init__(self, config: MixTransformerConfig) -> None:
        super().__init__()
        decoder = config.decoder_hidden_size
        self.num_stages = config.num_encoder_blocks
        self.linear_c = nn.ModuleList(nn.Linear(size, decoder) for size in config.hidden_sizes)
        self.linear_fuse = nn.Conv2d(decoder * self.num_stages, decoder, 1, bias=False)
        self.batch_norm = nn.BatchNorm2d(decoder)
        # NVlabs / mmseg drop whole channels (Dropout2d) before the classifier.
        self.dropout = nn.Dropout2d(config.classifier_dropout_prob)
        self.classifier = nn.Conv2d(decoder, config.num_labels, 1)

    def fuse(self, features: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """Return the fused (B, D, H/4, W/4) map, before BatchNorm."""
        decoder = self.linear_fuse.out_channels
        fuse = self.linear_fuse.weight.view(decoder, self.num_stages, decoder)  # slot j holds stage (last - j)
        shares = [fuse[:, self.num_stages - 1 - stage] for stage in range(self.num_stages)]  # (D, D) each
        # Upsampling a constant map leaves it unchanged, so all biases fold into the first stage's projection.
        bias = sum(share @ linear.bias for share, linear in zip(shares, self.linear_c))  # (D,)
        size = features[0].shape[-2:]
        fused = None
        for stage, (feature, linear, share) in enumerate(zip(features, self.linear_c, shares)):
            y = F.linear(feature.permute(0, 2, 3, 1), share @ linear.weight, bias if stage == 0 else None)
            y = y.permute(0, 3, 1, 2)  # (B, D, H_i, W_i), channels-last
            if y.shape[-2:] != size:
                y = F.interpolate(y, size=size, mode="bilinear", align_corners=False)
            fused = y if fused is None else fused + y
        return fused

    def forward(self, features: tuple[torch.Tensor, ...]) -> torch.Tensor:
        x = torch.relu(self.batch_norm(self.fuse(features)))
        return self.classifier(self.dropout(x))  # (B, num_labels, H/4, W/4)


class MixTransformerForSemanticSegmentation(MixTransformerPreTrainedModel):
    """MiT encoder plus the all-MLP decode head; outputs as transformers' `SegformerForSemanticSegmentation`."""

    def __init__(self, config: MixTransformerConfig) -> None:
        super().__init__(config)
        self.mix_transformer = MixTransformerModel(config)
        self.decode_head = MixTransformerDecodeHead(config)
        self.post_init()

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> SemanticSegmenterOutput | tuple:
        """Return logits at 1/4 scale; with `labels` (B, H, W), also the loss on logits upsampled to H x W."""
        output_hidden_states = _default(output_hidden_states, self.config.output_hidden_states)
        encoded = self.mix_transformer(
            pixel_values, output_attentions=output_attentions, output_hidden_states=True, return_dict=True
        )
        logits = self.decode_head(encoded.hidden_states)
        loss = None if labels is None else self.loss(logits, labels)
        output = SemanticSegmenterOutput(
            loss=loss,
            logits=logits,
            hidden_states=encoded.hidden_states if output_hidden_states else None,
            attentions=encoded.attentions,
        )
        return output if _default(return_dict, self.config.return_dict) else output.to_tuple()

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Segformer's loss: cross-entropy (BCE when `num_labels == 1`) on logits upsampled to the labels' size.

        Upsampling and loss run in fp32, so mixed precision does not degrade them.
        """
        if labels.ndim != 3:
            raise ValueError(f"labels: expected shape (batch, height, width), found {tuple(labels.shape)}")
        ignore = self.config.semantic_loss_ignore_index
        logits = F.interpolate(logits.float(), size=labels.shape[-2:], mode="bilinear", align_corners=False)
        if self.config.num_labels > 1:
            # Classes last, so a channels-last logit map needs no transposing copy at full label size.
            flat = logits.permute(0, 2, 3, 1).reshape(-1, logits.shape[1])  # (B*H*W, K)
            return F.cross_entropy(flat, labels.reshape(-1).long(), ignore_index=ignore)
        valid = ((labels >= 0) & (labels != ignore)).float()
        per_pixel = F.binary_cross_entropy_with_logits(logits.squeeze(1), labels.float(), reduction="none")
        return (per_pixel * valid).mean()

    def to_segformer(self):
        """Return a stock transformers `SegformerForSemanticSegmentation` with these weights and outputs."""
        from transformers import SegformerForSemanticSegmentation

        model = SegformerForSemanticSegmentation(self.config.to_segformer_config())
        model.load_state_dict(segformer_state_dict(self.state_dict()), strict=True)
        first = next(self.parameters())
        return model.to(device=first.device, dtype=first.dtype).train(self.training)


class MixTransformerBackbone(BackboneMixin, MixTransformerModel):
    """MiT as a transformers backbone (`out_features` among stage1..stage4), e.g. for `UperNetForSemanticSegmentation`."""

    has_attentions = True

    def __init__(self, config: MixTransformerConfig) -> None:
        super().__init__(config)
        self.num_features = list(config.hidden_sizes)

    def forward(
        self,
        pixel_values: torch.Tensor,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> BackboneOutput | tuple:
        """Return `feature_maps`, one (B, C, H, W) map per requested stage."""
        encoded = MixTransformerModel.forward(
            self, pixel_values, output_attentions=output_attentions, output_hidden_states=True, return_dict=True
        )
        output = BackboneOutput(
            feature_maps=tuple(
                h for name, h in zip(self.stage_names, encoded.hidden_states) if name in self.out_features
            ),
            hidden_states=encoded.hidden_states
            if _default(output_hidden_states, self.config.output_hidden_states)
            else None,
            attentions=encoded.attentions,
        )
        return output if _default(return_dict, self.config.return_dict) else output.to_tuple()


def _default(value: bool | None, fallback: bool | None) -> bool:
    return bool(fallback) if value is None else value


AUTO_MAP = {
    "AutoConfig": "configuration_mix_transformer.MixTransformerConfig",
    "AutoModel": "modeling_mix_transformer.MixTransformerModel",
    "AutoBackbone": "modeling_mix_transformer.MixTransformerBackbone",
    "AutoModelForSemanticSegmentation": "modeling_mix_transformer.MixTransformerForSemanticSegmentation",
}

MixTransformerConfig.register_for_auto_class("AutoConfig")
MixTransformerModel.register_for_auto_class("AutoModel")
MixTransformerBackbone.register_for_auto_class("AutoBackbone")
MixTransformerForSemanticSegmentation.register_for_auto_class("AutoModelForSemanticSegmentation")

__all__ = [
    "MixTransformerBackbone",
    "MixTransformerForSemanticSegmentation",
    "MixTransformerModel",
    "MixTransformerPreTrainedModel",
]
