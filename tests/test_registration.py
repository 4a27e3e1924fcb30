"""Auto-class registration, Hub remote code without segtune, and MiT as a backbone for transformers' UperNet."""

from __future__ import annotations

import json
import os

import torch
from transformers import (
    AutoBackbone,
    AutoConfig,
    AutoModel,
    AutoModelForSemanticSegmentation,
    UperNetConfig,
    UperNetForSemanticSegmentation,
)

import segtune
from segtune import (
    MixTransformerBackbone,
    MixTransformerConfig,
    MixTransformerForSemanticSegmentation,
    MixTransformerModel,
)
from tests.conftest import run_without_segtune, tiny_config

REMOTE_CODE_FILES = {"configuration_mix_transformer.py", "modeling_mix_transformer.py", "convert_mix_transformer.py"}

# Runs in a fresh interpreter where `import segtune` fails: only the files saved with the checkpoint exist.
NO_SEGTUNE = """
    import torch
    from transformers import AutoConfig, AutoModel, AutoModelForSemanticSegmentation

    checkpoint, pixels_path, out_path = sys.argv[1:]
    pixels = torch.load(pixels_path)
    config = AutoConfig.from_pretrained(checkpoint, trust_remote_code=True)
    segmenter = AutoModelForSemanticSegmentation.from_pretrained(checkpoint, trust_remote_code=True).eval()
    encoder = AutoModel.from_pretrained(checkpoint, trust_remote_code=True).eval()
    with torch.no_grad():
        result = {
            "classes": [type(config).__name__, type(segmenter).__name__, type(encoder).__name__],
            "module": type(segmenter).__module__,
            "logits": segmenter(pixels).logits,
            "last_hidden_state": encoder(pixels).last_hidden_state,
        }
        segmenter.set_attn_implementation("eager")  # refused unless the remote code uses the attention interface
        eager = segmenter(pixels, output_attentions=True)
        result["implementation"] = segmenter.config._attn_implementation
        result["eager_logits"], result["attentions"] = eager.logits, len(eager.attentions)
    torch.save(result, out_path)
"""


def test_import_registers_every_auto_class():
    config = tiny_config()
    assert isinstance(AutoConfig.for_model("mix_transformer"), MixTransformerConfig)
    assert type(AutoModel.from_config(config)) is MixTransformerModel
    assert type(AutoBackbone.from_config(config)) is MixTransformerBackbone
    assert type(AutoModelForSemanticSegmentation.from_config(config)) is MixTransformerForSemanticSegmentation
    assert segtune.MixTransformerConfig is MixTransformerConfig


def test_save_pretrained_writes_code_and_full_auto_map(tmp_path):
    MixTransformerForSemanticSegmentation(tiny_config()).save_pretrained(tmp_path)
    assert REMOTE_CODE_FILES <= set(os.listdir(tmp_path))
    auto_map = json.loads((tmp_path / "config.json").read_text())["auto_map"]
    assert auto_map == {
        "AutoConfig": "configuration_mix_transformer.MixTransformerConfig",
        "AutoModel": "modeling_mix_transformer.MixTransformerModel",
        "AutoBackbone": "modeling_mix_transformer.MixTransformerBackbone",
        "AutoModelForSemanticSegmentation": "modeling_mix_transformer.MixTransformerForSemanticSegmentation",
    }
    # The remote-code folder must stay self-contained: no segtune import in any uploaded file.
    for name in REMOTE_CODE_FILES:
        assert "segtune" not in "".join(
            line
            for line in (tmp_path / name).read_text().splitlines(keepends=True)
            if line.startswith(("import", "from"))
        ), name


def test_checkpoint_loads_through_remote_code_without_segtune(tmp_path):
    torch.manual_seed(0)
    model = MixTransformerForSemanticSegmentation(tiny_config(num_labels=3)).eval()
    checkpoint = tmp_path / "checkpoint"
    model.save_pretrained(checkpoint)
    pixels = torch.randn(1, 3, 64, 80)
    torch.save(pixels, tmp_path / "pixels.pt")
    outputs = (str(checkpoint), str(tmp_path / "pixels.pt"), str(tmp_path / "out.pt"))
    run_without_segtune(NO_SEGTUNE, *outputs, cwd=tmp_path, HF_HOME=str(tmp_path / "hf_home"), HF_HUB_OFFLINE="1")
    result = torch.load(tmp_path / "out.pt")
    assert result["classes"] == ["MixTransformerConfig", "MixTransformerForSemanticSegmentation", "MixTransformerModel"]
    assert result["module"].startswith("transformers_modules.")
    assert result["implementation"] == "eager" and result["attentions"] == sum(model.config.depths)
    with torch.no_grad():
        torch.testing.assert_close(result["logits"], model(pixels).logits, atol=0, rtol=0)
        torch.testing.assert_close(result["eager_logits"], model(pixels).logits, atol=1e-5, rtol=0)
        torch.testing.assert_close(
            result["last_hidden_state"], model.mix_transformer(pixels).last_hidden_state, atol=0, rtol=0
        )


def test_upernet_trains_a_step_on_a_mix_transformer_backbone():
    torch.manual_seed(0)
    backbone = tiny_config()
    model = UperNetForSemanticSegmentation(
        UperNetConfig(backbone_config=backbone, num_labels=4, hidden_size=16, auxiliary_in_channels=16)
    )
    assert isinstance(model.backbone, MixTransformerBackbone) and model.backbone.channels == [8, 8, 16, 16]
    before = {n: p.detach().clone() for n, p in model.backbone.named_parameters()}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    pixels, labels = torch.randn(2, 3, 64, 64), torch.randint(0, 4, (2, 64, 64))
    output = model(pixel_values=pixels, labels=labels)
    assert output.logits.shape == (2, 4, 64, 64) and torch.isfinite(output.loss)
    output.loss.backward()
    optimizer.step()
    changed = [n for n, p in model.backbone.named_parameters() if not torch.equal(p, before[n])]
    assert len(changed) == len(before)
