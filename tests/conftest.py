"""Shared fixtures: tiny configs, paired reference models, and foreign checkpoint layouts built in-test."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from transformers import SegformerForSemanticSegmentation

from segtune.models.convert import mix_transformer_state_dict
from segtune.models.mix_transformer import MixTransformerConfig, MixTransformerForSemanticSegmentation

pytest_plugins = ["tests.hub_fixtures"]

# transformers' own test config size: milliseconds per forward.
TINY = dict(
    depths=[1, 1, 1, 1],
    hidden_sizes=[8, 8, 16, 16],
    num_attention_heads=[1, 1, 2, 2],
    decoder_hidden_size=16,
    num_labels=5,
)


def tiny_config(**overrides) -> MixTransformerConfig:
    return MixTransformerConfig(**{**TINY, **overrides})


def randomize_batch_norm(model: torch.nn.Module, seed: int = 0) -> None:
    """Give BatchNorm non-trivial running statistics, so eval-mode parity tests exercise them."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.copy_(torch.randn(module.running_mean.shape, generator=generator))
            module.running_var.copy_(torch.rand(module.running_var.shape, generator=generator) + 0.5)


def segformer_pair(config: MixTransformerConfig, seed: int = 0):
    """transformers' SegformerForSemanticSegmentation and segtune's model with the same weights."""
    torch.manual_seed(seed)
    reference = SegformerForSemanticSegmentation(config.to_segformer_config())
    randomize_batch_norm(reference, seed)
    ours = MixTransformerForSemanticSegmentation(config)
    ours.load_state_dict(mix_transformer_state_dict(reference.state_dict()), strict=True)
    return reference, ours


# transformers 4 key layout, still used by the nvidia/* files on the Hub (inverse of transformers 5's renames).
_TO_TRANSFORMERS4 = (
    (r"stages\.(\d+)\.patch_embeddings\.", r"encoder.patch_embeddings.\1."),
    (r"stages\.(\d+)\.blocks\.", r"encoder.block.\1."),
    (r"stages\.(\d+)\.layer_norm\.", r"encoder.layer_norm.\1."),
    (r"attention\.q_proj\.", "attention.self.query."),
    (r"attention\.k_proj\.", "attention.self.key."),
    (r"attention\.v_proj\.", "attention.self.value."),
    (r"attention\.sequence_reduction\.sequence_reduction\.", "attention.self.sr."),
    (r"attention\.sequence_reduction\.layer_norm\.", "attention.self.layer_norm."),
    (r"attention\.o_proj\.", "attention.output.dense."),
    (r"mlp\.fc1\.", "mlp.dense1."),
    (r"mlp\.fc2\.", "mlp.dense2."),
    (r"layernorm_before\.", "layer_norm_1."),
    (r"layernorm_after\.", "layer_norm_2."),
    (r"decode_head\.linear_projections\.", "decode_head.linear_c."),
)


def to_transformers4_layout(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for key, tensor in state_dict.items():
        for pattern, replacement in _TO_TRANSFORMERS4:
            key = re.sub(pattern, replacement, key)
        out[key] = tensor
    return out


def to_nvlabs_layout(segformer_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A transformers-5 SegformerForSemanticSegmentation state dict written in NVlabs' mmseg-0.x layout.

    Built from the NVlabs key names (patch_embed{i}, block{i}.{j}, fused attn.kv, norm{i},
    decode_head.linear_c{i}.proj / linear_fuse.conv / linear_fuse.bn / linear_pred), independently of
    segtune's converter, and wrapped as an mmcv training checkpoint.
    """
    renames = (
        (r"segformer\.stages\.(\d+)\.patch_embeddings\.proj\.", lambda m: f"backbone.patch_embed{int(m[1]) + 1}.proj."),
        (
            r"segformer\.stages\.(\d+)\.patch_embeddings\.layer_norm\.",
            lambda m: f"backbone.patch_embed{int(m[1]) + 1}.norm.",
        ),
        (r"segformer\.stages\.(\d+)\.layer_norm\.", lambda m: f"backbone.norm{int(m[1]) + 1}."),
        (r"segformer\.stages\.(\d+)\.blocks\.(\d+)\.", lambda m: f"backbone.block{int(m[1]) + 1}.{m[2]}."),
        (r"decode_head\.linear_projections\.(\d+)\.proj\.", lambda m: f"decode_head.linear_c{int(m[1]) + 1}.proj."),
        (r"decode_head\.linear_fuse\.", lambda m: "decode_head.linear_fuse.conv."),
        (r"decode_head\.batch_norm\.", lambda m: "decode_head.linear_fuse.bn."),
        (r"decode_head\.classifier\.", lambda m: "decode_head.linear_pred."),
    )
    inner = (
        ("layernorm_before.", "norm1."),
        ("layernorm_after.", "norm2."),
        ("attention.q_proj.", "attn.q."),
        ("attention.o_proj.", "attn.proj."),
        ("attention.sequence_reduction.sequence_reduction.", "attn.sr."),
        ("attention.sequence_reduction.layer_norm.", "attn.norm."),
        ("mlp.dwconv.dwconv.", "mlp.dwconv.dwconv."),
    )
    out = {}
    for key, tensor in segformer_state.items():
        if ".attention.v_proj." in key:
            continue
        for pattern, replace in renames:
            key = re.sub(pattern, replace, key)
        for old, new in inner:
            key = key.replace(old, new)
        if ".attention.k_proj." in key:
            value = segformer_state[_source_key(segformer_state, key)]
            key, tensor = key.replace("attention.k_proj.", "attn.kv."), torch.cat([tensor, value])
        out[key] = tensor
    hidden = segformer_state["decode_head.classifier.weight"].shape[1]
    out["decode_head.conv_seg.weight"] = torch.zeros(3, hidden, 1, 1)  # mmseg's unused BaseDecodeHead conv
    return {"meta": {"mmseg_version": "0.11.0"}, "state_dict": out}


def _source_key(state: dict[str, torch.Tensor], nvlabs_key: str) -> str:
    """The value-projection key of the Segformer block a converted key-projection key came from."""
    match = re.match(r"backbone\.block(\d)\.(\d+)\.attention\.k_proj\.(\w+)", nvlabs_key)
    return f"segformer.stages.{int(match[1]) - 1}.blocks.{match[2]}.attention.v_proj.{match[3]}"


def nvlabs_to_mmseg1(nvlabs_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An NVlabs MiT encoder state dict in mmseg 1.x layout, following mmseg's tools/model_converters/mit2mmseg.py."""
    out = {}
    for key, tensor in nvlabs_state.items():
        stage = re.match(r"(patch_embed|block|norm)(\d)", key)
        if stage is None:
            continue
        i = int(stage[2]) - 1
        if key.startswith("patch_embed"):
            out[key.replace(stage[0], f"layers.{i}.0").replace("proj.", "projection.")] = tensor
        elif key.startswith("norm"):
            out[key.replace(stage[0], f"layers.{i}.2")] = tensor
        elif ".attn.q." in key:
            kv = nvlabs_state[key.replace("attn.q.", "attn.kv.")]
            name = key.replace(stage[0], f"layers.{i}.1").replace("attn.q.", "attn.attn.in_proj_")
            out[name] = torch.cat([tensor, kv])
        elif ".attn.kv." in key:
            continue
        elif ".attn.proj." in key:
            out[key.replace(stage[0], f"layers.{i}.1").replace("attn.proj.", "attn.attn.out_proj.")] = tensor
        elif ".mlp." in key:
            name = key.replace(stage[0], f"layers.{i}.1").replace("mlp.", "ffn.layers.")
            name = name.replace("fc1.", "0.").replace("dwconv.dwconv.", "1.").replace("fc2.", "4.")
            is_linear = name.endswith("weight") and (".layers.0." in name or ".layers.4." in name)
            out[name] = tensor.reshape(*tensor.shape, 1, 1) if is_linear else tensor
        else:
            out[key.replace(stage[0], f"layers.{i}.1")] = tensor
    return out


# First lines of a script for a fresh interpreter in which `import segtune` fails, as on a machine
# without segtune: only what a checkpoint carries (remote code) can be used.
_BLOCK_SEGTUNE = """
import sys

class BlockSegtune:
    def find_spec(self, name, path=None, target=None):
        if name == "segtune" or name.startswith("segtune."):
            raise ImportError("segtune is blocked in this process")

sys.meta_path.insert(0, BlockSegtune())
try:
    import segtune
    raise SystemExit("segtune was importable")
except ImportError:
    pass
"""


def run_without_segtune(script: str, *args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    """Run `script` (with `args` in sys.argv[1:]) in a fresh interpreter that cannot import segtune, in `cwd`,
    with `env` added to the environment; fail the test, showing its stderr, if it fails."""
    environment = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | env
    done = subprocess.run(
        [sys.executable, "-c", _BLOCK_SEGTUNE + textwrap.dedent(script), *args],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return done


# A run small enough for a test: 64 px synthetic scenes, batch 2, a few steps, no trackers.
TINY_RUN = [
    "data.synthetic.num_train=8",
    "data.synthetic.num_eval=3",
    "data.synthetic.image_size=64",
    "augment.scale=[64,64]",
    "augment.crop_size=64",
    "augment.ratio_range=[0.75,1.25]",
    "train.per_device_batch_size=2",
    "train.reference_batch_size=2",
    "train.max_steps=4",
    "train.eval_steps=2",
    "train.save_steps=2",
    "train.logging_steps=1",
    "data.num_workers=0",
    "logging.report_to=[none]",
    "optim.warmup_steps=1",
    "eval.num_visualizations=2",
]


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory):
    """A finished 2-step demo run, trained once per test session. Copy it before changing it."""
    from segtune.recipe import load_recipe
    from segtune.train import train

    out = tmp_path_factory.mktemp("finished") / "run"
    train(load_recipe("demo.yaml", [*TINY_RUN, "train.max_steps=2", f"train.output_dir={out}"]))
    return out


@pytest.fixture
def pixel_values() -> torch.Tensor:
    return torch.randn(2, 3, 97, 131, generator=torch.Generator().manual_seed(0))
