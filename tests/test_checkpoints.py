"""Loading foreign checkpoints: transformers Segformer (both key layouts) and NVlabs / mmseg state dicts."""

from __future__ import annotations

import logging

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import (
    SegformerForImageClassification,
    SegformerModel,
    ViTConfig,
    ViTModel,
)

from segtune.models.convert import CheckpointError, check_state_dict, convert_nvlabs_state_dict
from segtune.models.mix_transformer import (
    MixTransformerConfig,
    MixTransformerForSemanticSegmentation,
    MixTransformerModel,
)
from tests.conftest import (
    nvlabs_to_mmseg1,
    segformer_pair,
    tiny_config,
    to_nvlabs_layout,
    to_transformers4_layout,
)

CONVERT_LOGGER = "segtune.models.mix_transformer.convert_mix_transformer"


def save_segformer(model, directory, layout: str):
    """save_pretrained in either key layout.

    transformers 5 writes Segformer weights back in the transformers-4 layout of the nvidia/* files unless
    told to keep its own (`save_original_format=False`); the rewrite makes that layout explicit.
    """
    model.save_pretrained(directory, save_original_format=layout == "transformers4")
    if layout == "transformers4":
        path = directory / "model.safetensors"
        save_file(to_transformers4_layout(load_file(path)), path, metadata={"format": "pt"})
    return directory


def conversion_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == CONVERT_LOGGER and r.levelno >= logging.WARNING]


def encoder_states(model, pixels):
    """The four stage maps as (B, C, H, W), also from a Segformer with `reshape_last_stage=False`."""
    with torch.no_grad():
        states = model(pixels, output_hidden_states=True).hidden_states
    height, width = states[-2].shape[-2:]
    last = states[-1]
    if last.ndim == 3:  # (B, N, C) -> (B, C, H, W)
        last = last.transpose(1, 2).reshape(*last.shape[:1], -1, (height + 1) // 2, (width + 1) // 2)
    return (*states[:-1], last)


@pytest.fixture
def pixels():
    return torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(3))


@pytest.mark.parametrize("layout", ["transformers5", "transformers4"])
def test_semantic_segmentation_checkpoint_loads_without_warnings(tmp_path, layout, pixels, caplog):
    reference, _ = segformer_pair(tiny_config(num_labels=3, id2label={0: "a", 1: "b", 2: "c"}))
    save_segformer(reference, tmp_path, layout)
    with caplog.at_level(logging.WARNING, logger=CONVERT_LOGGER):
        ours = MixTransformerForSemanticSegmentation.from_pretrained(tmp_path)
    assert conversion_warnings(caplog) == []
    assert isinstance(ours.config, MixTransformerConfig) and ours.config.id2label == {0: "a", 1: "b", 2: "c"}
    assert not ours.training
    with torch.no_grad():
        torch.testing.assert_close(ours(pixels).logits, reference.eval()(pixels).logits, atol=1e-4, rtol=0)


@pytest.mark.parametrize("layout", ["transformers5", "transformers4"])
def test_imagenet_classification_checkpoint_gives_encoder_and_one_head_warning(tmp_path, layout, pixels, caplog):
    torch.manual_seed(0)
    config = tiny_config(num_labels=10).to_segformer_config()
    config.reshape_last_stage = False  # as nvidia/mit-b0's config
    classifier = SegformerForImageClassification(config).eval()
    save_segformer(classifier, tmp_path, layout)
    expected = encoder_states(classifier.segformer, pixels)

    encoder = MixTransformerModel.from_pretrained(tmp_path)
    for a, b in zip(encoder_states(encoder, pixels), expected):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=0)

    with caplog.at_level(logging.WARNING, logger=CONVERT_LOGGER):
        segmenter = MixTransformerForSemanticSegmentation.from_pretrained(tmp_path, num_labels=4)
    [message] = conversion_warnings(caplog)
    assert "has no decode head" in message and "decode_head.classifier" in message
    assert segmenter.config.num_labels == 4
    for a, b in zip(encoder_states(segmenter, pixels), expected):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=0)


def test_bare_segformer_model_checkpoint(tmp_path, pixels):
    torch.manual_seed(0)
    reference = SegformerModel(tiny_config().to_segformer_config()).eval()
    reference.save_pretrained(tmp_path)
    ours = MixTransformerModel.from_pretrained(tmp_path)
    for a, b in zip(encoder_states(ours, pixels), encoder_states(reference, pixels)):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=0)


def test_other_num_labels_reinitialises_only_the_classifier(tmp_path, pixels, caplog):
    reference, _ = segformer_pair(tiny_config(num_labels=5))
    reference.save_pretrained(tmp_path)
    with caplog.at_level(logging.WARNING, logger=CONVERT_LOGGER):
        ours = MixTransformerForSemanticSegmentation.from_pretrained(tmp_path, num_labels=2)
    [message] = conversion_warnings(caplog)
    assert "classifier has 5 labels and the model asks for 2" in message
    assert ours.decode_head.classifier.weight.shape == (2, 16, 1, 1)
    torch.testing.assert_close(ours.decode_head.linear_fuse.weight, reference.decode_head.linear_fuse.weight)


def test_dtype_is_honoured(tmp_path):
    reference, _ = segformer_pair(tiny_config())
    reference.save_pretrained(tmp_path)
    ours = MixTransformerForSemanticSegmentation.from_pretrained(tmp_path, dtype=torch.bfloat16)
    assert {p.dtype for p in ours.parameters()} == {torch.bfloat16}


def test_attn_implementation_is_honoured(tmp_path, pixels):
    reference, _ = segformer_pair(tiny_config())
    reference.save_pretrained(tmp_path)
    config = MixTransformerConfig.from_segformer(reference.config)
    ours = MixTransformerForSemanticSegmentation.from_pretrained(tmp_path, attn_implementation="eager", config=config)
    assert ours.config._attn_implementation == "eager" and config._attn_implementation is None
    with torch.no_grad():
        assert len(ours(pixels, output_attentions=True).attentions) == sum(ours.config.depths)
    assert MixTransformerModel.from_pretrained(tmp_path).config._attn_implementation == "sdpa"
    with pytest.raises(ValueError, match=r'Specified `attn_implementation="foo"` is not supported'):
        MixTransformerModel.from_pretrained(tmp_path, attn_implementation="foo")


def test_unrelated_model_type_is_refused(tmp_path):
    ViTModel(ViTConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=1, intermediate_size=8)).save_pretrained(
        tmp_path
    )
    with pytest.raises(
        CheckpointError, match=r"expected a checkpoint of model_type 'mix_transformer' or 'segformer', found 'vit'"
    ):
        MixTransformerModel.from_pretrained(tmp_path)


def test_checkpoint_that_does_not_fit_names_shapes(tmp_path):
    reference, _ = segformer_pair(tiny_config())
    reference.save_pretrained(tmp_path)
    wrong = tiny_config(hidden_sizes=[8, 8, 16, 32])
    with pytest.raises(CheckpointError, match=r"stages\.3\.patch_embed\.proj\.bias: expected \(32,\), found \(16,\)"):
        MixTransformerForSemanticSegmentation.from_pretrained(tmp_path, config=wrong)


def test_check_state_dict_names_unexpected_keys():
    model = MixTransformerModel(tiny_config())
    state = dict(model.state_dict(), **{"stages.9.norm.weight": torch.ones(3)})
    with pytest.raises(
        CheckpointError, match=r"1 keys do not exist in MixTransformerModel: \['stages\.9\.norm\.weight'\]"
    ):
        check_state_dict(model, state, "test.pth")


def test_nvlabs_segmentation_checkpoint_with_head(pixels):
    reference, _ = segformer_pair(tiny_config(num_labels=3))
    checkpoint = to_nvlabs_layout(reference.state_dict())
    ours = MixTransformerForSemanticSegmentation(tiny_config(num_labels=3))
    ours.load_state_dict(convert_nvlabs_state_dict(checkpoint, include_head=True), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(pixels).logits, reference.eval()(pixels).logits, atol=1e-4, rtol=0)


def test_nvlabs_and_mmseg1_encoder_checkpoints(pixels):
    reference, _ = segformer_pair(tiny_config())
    nvlabs = to_nvlabs_layout(reference.state_dict())["state_dict"]
    nvlabs_encoder = {k.removeprefix("backbone."): v for k, v in nvlabs.items() if k.startswith("backbone.")}
    imagenet = dict(nvlabs_encoder, **{"head.weight": torch.zeros(10, 16), "head.bias": torch.zeros(10)})
    expected = encoder_states(reference.segformer.eval(), pixels)
    for checkpoint in (imagenet, nvlabs_to_mmseg1(nvlabs_encoder), {"state_dict": nvlabs}):
        encoder = MixTransformerModel(tiny_config())
        encoder.load_state_dict(convert_nvlabs_state_dict(checkpoint), strict=True)
        for a, b in zip(encoder_states(encoder.eval(), pixels), expected):
            torch.testing.assert_close(a, b, atol=1e-4, rtol=0)


def test_nvlabs_unknown_tensors_are_named():
    with pytest.raises(CheckpointError, match=r"no MixTransformer counterpart: \['pos_embed'\]"):
        convert_nvlabs_state_dict({"pos_embed": torch.zeros(1), "norm1.weight": torch.ones(8)})
    mmseg1_head = {"decode_head.convs.0.conv.weight": torch.zeros(16, 8, 1, 1)}
    with pytest.raises(CheckpointError, match=r"decode_head\.convs\.0\.conv\.weight"):
        convert_nvlabs_state_dict(mmseg1_head, include_head=True)
    assert convert_nvlabs_state_dict(mmseg1_head) == {}  # encoder only: any head is left out
