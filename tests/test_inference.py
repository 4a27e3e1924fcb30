"""Whole, sliding-window and TTA prediction."""

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from segtune.inference import predict_labels, predict_scores, slide_logits, whole_logits, window_grid
from segtune.recipe import EvalConfig


class Pointwise(nn.Module):
    """A per-pixel classifier at full resolution: any tiling of the image gives the same scores."""

    def __init__(self, num_labels: int = 4) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, num_labels, 1)
        self.calls = 0

    def forward(self, pixel_values):
        self.calls += 1
        return SimpleNamespace(logits=self.conv(pixel_values))


def test_window_grid_as_mmseg():
    windows = window_grid(1024, 2048, (1024, 1024), (768, 768))
    assert windows == [(0, 1024, 0, 1024), (0, 1024, 768, 1792), (0, 1024, 1024, 2048)]
    small = window_grid(300, 200, (512, 512), (384, 384))
    assert small == [(0, 300, 0, 200)]
    covered = torch.zeros(700, 900)
    for y1, y2, x1, x2 in window_grid(700, 900, (256, 256), (200, 200)):
        assert y2 - y1 == 256 and x2 - x1 == 256
        covered[y1:y2, x1:x2] += 1
    assert covered.min() >= 1


def test_slide_equals_whole_for_a_pointwise_model():
    model, pixels = Pointwise(), torch.randn(2, 3, 70, 90)
    whole = whole_logits(model, pixels)
    slid = slide_logits(model, pixels, (32, 48), (24, 40), window_batch=3)
    torch.testing.assert_close(slid, whole)
    assert model.calls == 1 + 3  # 9 windows in batches of 3


def test_predict_labels_resizes_scores_to_the_native_label_size():
    model, pixels = Pointwise(), torch.randn(1, 3, 32, 48)
    labels = predict_labels(model, pixels, EvalConfig(), label_size=(64, 96))
    assert labels.shape == (1, 64, 96) and labels.dtype == torch.int64
    upsampled = torch.nn.functional.interpolate(
        whole_logits(model, pixels), size=(64, 96), mode="bilinear", align_corners=False
    )
    assert torch.equal(labels, upsampled.argmax(1))


def test_tta_averages_softmax_over_scales_and_flips():
    model, pixels = Pointwise(), torch.randn(1, 3, 32, 32)
    config = EvalConfig(tta=True, tta_scales=(1.0,), tta_flip=True)
    scores = predict_scores(model, pixels, config)
    torch.testing.assert_close(scores, whole_logits(model, pixels).softmax(1))  # flip-equivariant model
    multi = predict_scores(model, pixels, EvalConfig(tta=True, tta_scales=(0.5, 1.0, 1.5)))
    assert multi.shape == (1, 4, 32, 32)
    torch.testing.assert_close(multi.sum(1), torch.ones(1, 32, 32))


@pytest.mark.parametrize("mode", ["whole", "slide"])
def test_real_model_any_size(mode):
    from segtune.models.mix_transformer import MixTransformerForSemanticSegmentation
    from tests.conftest import tiny_config

    model = MixTransformerForSemanticSegmentation(tiny_config()).eval()
    config = EvalConfig(mode=mode, crop_size=(64, 64), stride=(48, 48))
    labels = predict_labels(model, torch.randn(1, 3, 97, 131), config, label_size=(97, 131))
    assert labels.shape == (1, 97, 131) and int(labels.max()) < 5
