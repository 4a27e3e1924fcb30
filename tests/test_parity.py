"""Numerical parity with transformers' SegformerForSemanticSegmentation, in both conversion directions.

The contract: logits and every stage's hidden states within 1e-4 in fp32 eval mode, for a B0 config
and a B2-width config of reduced depth, with random weights. segtune honours `layer_norm_eps` (1e-6,
as NVlabs) where transformers always uses 1e-5; the differences that causes are about 2e-5.
"""

import pytest
import torch
from transformers import SegformerForSemanticSegmentation

from segtune.models.convert import mix_transformer_state_dict, segformer_state_dict
from segtune.models.mix_transformer import MixTransformerConfig, MixTransformerForSemanticSegmentation
from tests.conftest import randomize_batch_norm, segformer_pair

CONFIGS = {
    "b0": MixTransformerConfig.from_variant("mit-b0", num_labels=19),
    "b2-width-shallow": MixTransformerConfig.from_variant("mit-b2", num_labels=19, depths=[1, 2, 2, 1]),
}
TOLERANCE = dict(atol=1e-4, rtol=0)


def assert_same_outputs(reference, ours, pixels):
    with torch.no_grad():
        expected = reference(pixels, output_hidden_states=True)
        found = ours(pixels, output_hidden_states=True)
    assert found.logits.shape == expected.logits.shape
    torch.testing.assert_close(found.logits, expected.logits, **TOLERANCE)
    assert len(found.hidden_states) == len(expected.hidden_states) == 4
    for stage, (a, b) in enumerate(zip(found.hidden_states, expected.hidden_states)):
        torch.testing.assert_close(a, b, **TOLERANCE, msg=f"stage {stage + 1}")


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_segformer_weights_into_mix_transformer(name):
    reference, ours = segformer_pair(CONFIGS[name])
    pixels = torch.randn(2, 3, 128, 160)
    assert_same_outputs(reference.eval(), ours.eval(), pixels)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_mix_transformer_weights_into_segformer(name):
    torch.manual_seed(1)
    ours = MixTransformerForSemanticSegmentation(CONFIGS[name])
    randomize_batch_norm(ours, seed=1)
    reference = SegformerForSemanticSegmentation(CONFIGS[name].to_segformer_config())
    reference.load_state_dict(segformer_state_dict(ours.state_dict()), strict=True)
    assert_same_outputs(reference.eval(), ours.eval(), torch.randn(1, 3, 97, 131))


def test_to_segformer_returns_an_equivalent_stock_model():
    _, ours = segformer_pair(CONFIGS["b0"])
    stock = ours.eval().to_segformer()
    assert type(stock) is SegformerForSemanticSegmentation and not stock.training
    assert stock.config.id2label == ours.config.id2label
    assert_same_outputs(stock, ours, torch.randn(1, 3, 64, 96))


def test_key_maps_are_inverse():
    _, ours = segformer_pair(CONFIGS["b2-width-shallow"])
    state = ours.state_dict()
    back = mix_transformer_state_dict(segformer_state_dict(state))
    assert back.keys() == state.keys()
    for key in state:
        assert torch.equal(back[key], state[key]), key


def test_training_step_matches_segformer():
    """The re-associated decode head is the same function in training: loss and every gradient agree."""
    config = MixTransformerConfig.from_variant(
        "mit-b0", num_labels=7, depths=[1, 1, 1, 1], drop_path_rate=0.0, classifier_dropout_prob=0.0
    )
    reference, ours = segformer_pair(config)
    pixels, labels = torch.randn(2, 3, 96, 128), torch.randint(0, 7, (2, 96, 128))
    labels[0, :20] = 255
    losses = []
    for model in (reference.train(), ours.train()):
        loss = model(pixels, labels=labels).loss
        loss.backward()
        losses.append(loss)
    torch.testing.assert_close(losses[1], losses[0], atol=1e-5, rtol=0)
    ours_grads = mix_transformer_state_dict({n: p.grad for n, p in reference.named_parameters()})
    for name, parameter in ours.named_parameters():
        torch.testing.assert_close(parameter.grad, ours_grads[name], atol=1e-4, rtol=1e-3, msg=name)
    # BatchNorm ran in training mode: running statistics updated identically.
    torch.testing.assert_close(ours.decode_head.batch_norm.running_mean, reference.decode_head.batch_norm.running_mean)
