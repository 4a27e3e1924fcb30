"""MixTransformerConfig: paper variants, Segformer conversion, validation errors, serialisation."""

import pytest
import torch
from transformers import SegformerConfig

from segtune.models.mix_transformer import (
    MixTransformerConfig,
    MixTransformerConfigError,
    MixTransformerForSemanticSegmentation,
)
from segtune.models.mix_transformer.configuration_mix_transformer import SEGFORMER_FIELDS

# SegFormer paper, Table 1a: parameters (millions) of the ADE20K models (150 classes), encoder + decoder.
PAPER_PARAMS_M = {"mit-b0": 3.8, "mit-b1": 13.7, "mit-b2": 27.5, "mit-b3": 47.3, "mit-b4": 64.1, "mit-b5": 84.7}


@pytest.mark.parametrize("variant", sorted(PAPER_PARAMS_M))
def test_variant_parameter_count_matches_paper(variant):
    with torch.device("meta"):  # counts parameters without allocating B5
        model = MixTransformerForSemanticSegmentation(MixTransformerConfig.from_variant(variant, num_labels=150))
    params = sum(p.numel() for p in model.parameters()) / 1e6
    assert round(params, 1) == PAPER_PARAMS_M[variant]


def test_variant_fields_and_overrides():
    config = MixTransformerConfig.from_variant("MiT-B2", num_labels=19, drop_path_rate=0.2)
    assert config.depths == [3, 4, 6, 3]
    assert config.hidden_sizes == [64, 128, 320, 512]
    assert config.decoder_hidden_size == 768
    assert config.num_attention_heads == [1, 2, 5, 8]
    assert config.sr_ratios == [8, 4, 2, 1]
    assert config.patch_sizes == [7, 3, 3, 3] and config.strides == [4, 2, 2, 2]
    assert config.layer_norm_eps == 1e-6
    assert config.num_labels == 19 and config.drop_path_rate == 0.2


def test_unknown_variant_names_the_choices():
    with pytest.raises(MixTransformerConfigError, match=r"unknown MiT variant 'mit-b9'.*'mit-b0'.*'mit-b5'"):
        MixTransformerConfig.from_variant("mit-b9")


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"depths": [1, 2]}, r"depths: expected 4 values .* found 2"),
        (
            {"hidden_sizes": [32, 64, 160, 250]},
            r"hidden_sizes\[3\]=250, which is not divisible by num_attention_heads\[3\]=8",
        ),
        ({"sr_ratios": [8, 4, 0, 1]}, r"sr_ratios: expected positive values, found \[8, 4, 0, 1\]"),
    ],
)
def test_invalid_config_is_refused(overrides, message):
    with pytest.raises(MixTransformerConfigError, match=message):
        MixTransformerConfig(**overrides)


def test_segformer_round_trip_keeps_every_field_and_labels():
    labels = {0: "road", 1: "car", 2: "sky"}
    segformer = SegformerConfig(
        hidden_sizes=[64, 128, 320, 512],
        depths=[3, 4, 6, 3],
        decoder_hidden_size=768,
        id2label=labels,
        label2id={v: k for k, v in labels.items()},
        drop_path_rate=0.3,
    )
    ours = MixTransformerConfig.from_segformer(segformer)
    assert isinstance(ours, MixTransformerConfig)
    for name in SEGFORMER_FIELDS:
        assert getattr(ours, name) == pytest.approx(getattr(segformer, name)), name
    assert ours.id2label == labels and ours.num_labels == 3
    back = ours.to_segformer_config()
    assert isinstance(back, SegformerConfig) and back.reshape_last_stage is True
    assert {n: getattr(back, n) for n in SEGFORMER_FIELDS} == {n: getattr(ours, n) for n in SEGFORMER_FIELDS}
    assert back.id2label == labels


def test_from_segformer_with_other_num_labels_drops_label_names():
    segformer = SegformerConfig(num_labels=1000)
    ours = MixTransformerConfig.from_segformer(segformer, num_labels=19)
    assert ours.num_labels == 19
    assert ours.id2label[0] == "LABEL_0"


def test_backbone_out_features_default_to_all_stages_and_survive_saving(tmp_path):
    config = MixTransformerConfig(out_features=["stage2", "stage4"])
    assert config.out_indices == [1, 3]
    assert MixTransformerConfig().out_features == ["stage1", "stage2", "stage3", "stage4"]
    config.save_pretrained(tmp_path)
    loaded = MixTransformerConfig.from_pretrained(tmp_path)
    assert loaded.out_features == ["stage2", "stage4"] and loaded.stage_names == config.stage_names
    with pytest.raises(ValueError, match="out_features must be a subset of stage_names"):
        MixTransformerConfig(out_features=["stage5"])
