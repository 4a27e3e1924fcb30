"""The `loss:` section: each term against segmentation_models_pytorch's or torch's reference and mmseg's OHEM rule,
the ignore index, float32 under autocast, the model's upsampling, and class weights (a list, or `auto` from the
training split's pixels, counted once and cached)."""

from __future__ import annotations

import math
import os
from types import SimpleNamespace

import numpy as np
import pytest
import segmentation_models_pytorch.losses as smp
import torch
import torch.nn.functional as F

import segtune.data.class_pixels as class_pixels_module
from segtune.data import build_datasets
from segtune.data.labels import LabelSpec
from segtune.errors import RecipeError
from segtune.models.mix_transformer import MixTransformerForSemanticSegmentation
from segtune.recipe import (
    CLASS_WEIGHTED_TERMS,
    LOSS_TERMS,
    CrossEntropyTerm,
    DiceTerm,
    FocalTerm,
    JaccardTerm,
    LovaszTerm,
)
from segtune.train.criterion import build_criterion, median_frequency_weights
from segtune.train.losses import SegmentationLoss, ohem_cross_entropy, term_function, upsample
from tests.conftest import tiny_config
from tests.data_fixtures import folder_recipe, isolated_datasets_cache, save  # noqa: F401 (fixture)
from tests.data_fixtures import recipe as data_recipe

IGNORE = 255
WEIGHTS = torch.tensor([0.5, 2.0, 1.0, 3.0, 0.25])


def random_batch(seed: int = 0, shape: tuple[int, ...] = (2, 5, 24, 20)) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (B, K, H, W) and labels (B, H, W) with a fifth of the pixels ignored and class 4 absent."""
    generator = torch.Generator().manual_seed(seed)
    batch, classes, height, width = shape
    logits = torch.randn(shape, generator=generator) * 3
    labels = torch.randint(0, classes - 1, (batch, height, width), generator=generator)
    labels[torch.rand(batch, height, width, generator=generator) < 0.2] = IGNORE
    return logits, labels


def value_and_gradient(function, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    logits = logits.clone().requires_grad_()
    value = function(logits)
    value.backward()
    return value.detach(), logits.grad


SMP_REFERENCES = {
    "dice": (DiceTerm(), None, dict(cls=smp.DiceLoss)),
    "dice, smooth": (DiceTerm(smooth=1.0), None, dict(cls=smp.DiceLoss, smooth=1.0)),
    "jaccard": (JaccardTerm(), None, dict(cls=smp.JaccardLoss)),
    "jaccard, smooth": (JaccardTerm(smooth=0.5), None, dict(cls=smp.JaccardLoss, smooth=0.5)),
    "focal": (FocalTerm(), None, dict(cls=smp.FocalLoss)),
    "focal, alpha and gamma": (FocalTerm(gamma=1.5, alpha=0.25), None, dict(cls=smp.FocalLoss, gamma=1.5, alpha=0.25)),
    "focal, class weights": (FocalTerm(), WEIGHTS, dict(cls=smp.FocalLoss, class_weights=WEIGHTS.tolist())),
    "lovasz": (LovaszTerm(), None, dict(cls=smp.LovaszLoss)),
    "lovasz, per image": (LovaszTerm(per_image=True), None, dict(cls=smp.LovaszLoss, per_image=True)),
}


@pytest.mark.parametrize("term, weights, reference", SMP_REFERENCES.values(), ids=SMP_REFERENCES)
@pytest.mark.parametrize("seed", [0, 1])
def test_each_term_equals_segmentation_models_pytorch(term, weights, reference, seed):
    logits, labels = random_batch(seed)
    options = {k: v for k, v in reference.items() if k != "cls"}
    theirs = reference["cls"]("multiclass", ignore_index=IGNORE, **options)
    ours = term_function(term, IGNORE, weights)
    value, gradient = value_and_gradient(lambda x: ours(x, labels), logits)
    expected, expected_gradient = value_and_gradient(lambda x: theirs(x, labels), logits)
    assert value.dtype == torch.float32 and 0 < value
    assert torch.allclose(value, expected, rtol=0, atol=1e-5), (value, expected)
    assert torch.allclose(gradient, expected_gradient, rtol=0, atol=1e-5)


@pytest.mark.parametrize("weights", [None, WEIGHTS], ids=["plain", "class weights"])
def test_cross_entropy_equals_torch_s(weights):
    logits, labels = random_batch()
    ours = term_function(CrossEntropyTerm(), IGNORE, weights)
    value, gradient = value_and_gradient(lambda x: ours(x, labels), logits)
    expected, expected_gradient = value_and_gradient(
        lambda x: F.cross_entropy(x, labels, weight=weights, ignore_index=IGNORE), logits
    )
    assert torch.allclose(value, expected, rtol=0, atol=1e-6)
    assert torch.allclose(gradient, expected_gradient, rtol=0, atol=1e-7)


# One image of 6 pixels, all class 0 but one ignored, whose class-0 probabilities are 0.9, 0.8, 0.6, 0.3, 0.1.
OHEM_PROBS = [0.9, 0.8, 0.6, 0.3, 0.1]


@pytest.mark.parametrize(
    "thresh, min_kept, kept",
    [
        # mmseg: sort the valid probabilities, p = sorted[min(min_kept, valid - 1)], keep those below max(p, thresh)
        (0.7, 2, [0.6, 0.3, 0.1]),  # p = 0.6: the threshold decides
        (0.5, 4, [0.8, 0.6, 0.3, 0.1]),  # p = 0.9: min_kept decides
        (0.7, 100, [0.8, 0.6, 0.3, 0.1]),  # more than there are: p is the largest, which mmseg leaves out
        (None, 2, [0.3, 0.1]),  # no threshold: the min_kept highest losses
    ],
)
def test_ohem_keeps_the_pixels_mmseg_s_sampler_keeps(thresh, min_kept, kept):
    probs = torch.tensor(OHEM_PROBS)
    logits = torch.zeros(1, 2, 1, 6)
    logits[0, 0, 0, :5] = torch.log(probs / (1 - probs))  # class 1's logit is 0: p0 = sigmoid(z0)
    labels = torch.tensor([[[0, 0, 0, 0, 0, IGNORE]]])
    expected = -sum(math.log(p) for p in kept) / len(OHEM_PROBS)  # divided by the valid pixels, as ce
    assert ohem_cross_entropy(logits, labels, IGNORE, thresh, min_kept).item() == pytest.approx(expected, rel=1e-6)


def _mmseg_ohem(logits, labels, thresh, min_kept, weights):
    """mmseg 1.x's OHEMPixelSampler.sample, restated with a full sort, then the weighted loss divided as ce."""
    nll = F.cross_entropy(logits, labels, ignore_index=IGNORE, reduction="none")
    weighted = F.cross_entropy(logits, labels, weight=weights, ignore_index=IGNORE, reduction="none")
    valid = labels != IGNORE
    seg_weight = torch.zeros_like(nll)
    valid_weight = seg_weight[valid]
    batch_kept = min_kept * labels.shape[0]
    if thresh is not None:
        prob = logits.softmax(1).gather(1, labels.masked_fill(~valid, 0).unsqueeze(1)).squeeze(1)
        ordered = prob[valid].sort().values
        threshold = max(ordered[min(batch_kept, ordered.numel() - 1)].item(), thresh)
        valid_weight[prob[valid] < threshold] = 1.0
    else:
        valid_weight[weighted[valid].sort(descending=True).indices[:batch_kept]] = 1.0
    seg_weight[valid] = valid_weight
    return (weighted * seg_weight).sum() / (weights[labels[valid]].sum())


@pytest.mark.parametrize("thresh, min_kept", [(0.7, 50), (0.3, 50), (0.9, 1000), (None, 50)])
def test_ohem_on_random_batches_follows_mmseg_s_sort(thresh, min_kept):
    logits, labels = random_batch()
    ours = ohem_cross_entropy(logits, labels, IGNORE, thresh, min_kept, WEIGHTS)
    expected = _mmseg_ohem(logits, labels, thresh, min_kept, WEIGHTS)
    assert torch.allclose(ours, expected, rtol=1e-5, atol=0), (ours, expected)


def test_ohem_keeping_every_pixel_is_cross_entropy():
    logits, labels = random_batch()
    ce = F.cross_entropy(logits, labels, weight=WEIGHTS, ignore_index=IGNORE)
    everything = ohem_cross_entropy(logits, labels, IGNORE, None, labels.numel(), WEIGHTS)
    assert torch.allclose(everything, ce, rtol=1e-6, atol=0)


EVERY_TERM = [cls() for cls in LOSS_TERMS.values()]


@pytest.mark.parametrize("term", EVERY_TERM, ids=lambda t: t.name)
def test_ignored_pixels_change_nothing(term):
    logits, labels = random_batch()
    ignored = (labels == IGNORE).unsqueeze(1).expand_as(logits)
    changed = logits.masked_fill(ignored, 50.0)
    function = term_function(term, IGNORE, WEIGHTS)
    assert torch.equal(function(changed, labels), function(logits, labels))
    _, gradient = value_and_gradient(lambda x: function(x, labels), logits)
    assert not gradient[ignored].any()


@pytest.mark.parametrize("term", EVERY_TERM, ids=lambda t: t.name)
def test_class_weights_reach_only_the_pixel_averaged_terms(term):
    logits, labels = random_batch()
    weighted = term_function(term, IGNORE, WEIGHTS)(logits, labels)
    plain = term_function(term, IGNORE)(logits, labels)
    assert torch.equal(weighted, plain) == (term.name not in CLASS_WEIGHTED_TERMS)


def test_the_sum_is_weighted_and_runs_in_float32_under_autocast():
    logits, labels = random_batch(shape=(2, 5, 6, 5))  # at a quarter of the labels' size, as the model's
    labels = labels.repeat_interleave(4, 1).repeat_interleave(4, 2)
    terms = [CrossEntropyTerm(weight=1.0), DiceTerm(weight=0.5), LovaszTerm(weight=0.25)]
    criterion = SegmentationLoss(terms, IGNORE, WEIGHTS)
    half = logits.bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = criterion(half, labels)
    full = criterion(half.float(), labels)
    assert mixed.dtype == torch.float32 and torch.equal(mixed, full)
    upsampled = upsample(half, labels.shape[-2:])
    assert upsampled.dtype == torch.float32 and upsampled.shape[-2:] == labels.shape[-2:]
    by_term = [t.weight * criterion.term(t)(upsampled, labels) for t in terms]
    assert torch.allclose(full, sum(by_term), rtol=1e-6, atol=0)


def test_cross_entropy_alone_is_the_model_s_own_loss():
    """Same upsampling (bilinear, to the labels' size, float32), same loss: the numbers are equal, not close."""
    torch.manual_seed(0)
    model = MixTransformerForSemanticSegmentation(tiny_config()).eval()
    pixel_values = torch.randn(2, 3, 64, 48)
    _, labels = random_batch(shape=(2, 5, 64, 48))
    logits = model(pixel_values=pixel_values).logits  # channels-last, at a quarter of the size
    criterion = SegmentationLoss([CrossEntropyTerm()], IGNORE)
    assert torch.equal(criterion(logits, labels), model.loss(logits, labels))


def test_median_frequency_balancing_gives_the_median_class_weight_one():
    pixels = np.array([10, 30, 0, 5])
    image_pixels = np.array([100, 100, 0, 50])  # frequencies 0.1, 0.3, -, 0.1: median 0.1
    assert median_frequency_weights(pixels, image_pixels) == pytest.approx([1.0, 1 / 3, 1.0, 1.0])


def _known_folder(root):
    """Two 8x8 training masks with a known histogram over 4 classes (class 3 never appears), one validation pair."""
    first = np.zeros((8, 8), np.uint8)
    first[0, :4], first[1, :4] = 1, IGNORE  # 56 background, 4 of class 1, 4 ignored
    second = np.zeros((8, 8), np.uint8)
    second[4:, 4:] = 2  # 48 background, 16 of class 2
    image = np.zeros((8, 8, 3), np.uint8)
    for name, mask in (("a", first), ("b", second)):
        save(root / "train" / "images" / f"{name}.png", image)
        save(root / "train" / "masks" / f"{name}.png", mask)
    save(root / "val" / "images" / "v.png", image)
    save(root / "val" / "masks" / "v.png", second)
    return root


def test_auto_class_weights_come_from_the_training_pixels_counted_once(tmp_path, monkeypatch, caplog):
    recipe = folder_recipe(_known_folder(tmp_path / "data"), "data.num_labels=4", "loss.class_weights=auto")
    data = build_datasets(recipe)
    scanned = []
    real_scan = class_pixels_module.scan
    monkeypatch.setattr(class_pixels_module, "scan", lambda *a, **k: scanned.append(1) or real_scan(*a, **k))
    shown = []
    criterion = build_criterion(recipe, data, show=shown.append)
    # pixels 104, 4, 16, 0 in images of 124, 60 and 64 labelled pixels: frequencies 0.839, 0.0667, 0.25
    frequencies = np.array([104 / 124, 4 / 60, 16 / 64])
    expected = [0.25 / f for f in frequencies] + [1.0]
    assert criterion.class_weights.tolist() == pytest.approx(expected)
    assert "no pixel of ['class_3'] in the training split; weight 1.0" in caplog.text
    [message] = shown
    assert message.startswith("loss.class_weights: auto, median-frequency balancing (Eigen & Fergus 2015), over 2")
    assert "counted now and cached" in message and "class_1 3.75" in message
    assert len(scanned) == 1

    again = build_criterion(recipe, build_datasets(recipe), show=shown.append)
    assert torch.equal(again.class_weights, criterion.class_weights)
    assert len(scanned) == 1 and "read from the cache" in shown[-1]  # the same data is never counted twice

    mask = tmp_path / "data" / "train" / "masks" / "b.png"
    save(mask, np.full((8, 8), 2, np.uint8))
    os.utime(mask, ns=(mask.stat().st_atime_ns, mask.stat().st_mtime_ns + 10**9))
    edited = build_criterion(recipe, build_datasets(recipe), show=shown.append)
    assert len(scanned) == 2 and edited.class_weights[2] != criterion.class_weights[2]


def test_class_weights_that_do_not_fit_the_data_are_refused_naming_the_key(tmp_path):
    root = _known_folder(tmp_path / "data")
    (root / "id2label.json").write_text('{"0": "road", "1": "car", "2": "sky", "3": "pole"}')
    recipe = data_recipe("data.source=folder", f"data.path={root}", "loss.class_weights=[1, 2, 3]")  # classes unknown
    with pytest.raises(RecipeError, match=r"loss.class_weights: expected 4 weights, one per class, found 3: .*'pole'"):
        build_criterion(recipe, build_datasets(recipe))
    single = SimpleNamespace(labels=LabelSpec(id2label={0: "crack"}))
    with pytest.raises(RecipeError, match=r"loss: the terms need at least 2 classes, found 1"):
        build_criterion(recipe, single)
