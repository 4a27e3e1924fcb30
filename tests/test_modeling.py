"""Behaviour of every MixTransformer model class: one base tester, one short subclass per class."""

from __future__ import annotations

import logging

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from transformers import AutoBackbone, AutoModel, AutoModelForSemanticSegmentation
from transformers.utils.logging import warning_once

import segtune  # noqa: F401  (registers the Auto classes)
from segtune.models.mix_transformer import (
    MixTransformerBackbone,
    MixTransformerForSemanticSegmentation,
    MixTransformerModel,
)
from tests.conftest import segformer_pair, tiny_config

UNKNOWN_IMPLEMENTATION = r'Specified `attn_implementation="foo"` is not supported'
SDPA_WARNING = "`sdpa` attention does not support `output_attentions=True`"


class TensorShapes(TorchDispatchMode):
    """Records the shape of every tensor any aten op produces, forward and backward."""

    def __init__(self) -> None:
        super().__init__()
        self.shapes: set[tuple[int, ...]] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(tensor, torch.Tensor):
                self.shapes.add(tuple(tensor.shape))
        return out


def _maps(output) -> tuple[torch.Tensor, ...]:
    """The tensors a model class is judged by: feature maps, or logits."""
    if hasattr(output, "feature_maps"):
        return output.feature_maps
    if hasattr(output, "logits"):
        return (output.logits,)
    return (output.last_hidden_state,)


class MixTransformerTester:
    model_class: type
    auto_class: type

    def build(self, attn_implementation: str | None = None, **overrides):
        torch.manual_seed(0)
        config = tiny_config(**overrides)
        config._attn_implementation = attn_implementation
        return self.model_class(config).eval()

    def test_any_input_size_gives_stage_scales(self, pixel_values):
        model = self.build()
        with torch.no_grad():
            output = model(pixel_values, output_hidden_states=True)
        # 97 x 131 through stride 4, 2, 2, 2 convs with padding k // 2: ceil-divisions.
        expected = [(25, 33), (13, 17), (7, 9), (4, 5)]
        assert [tuple(h.shape[-2:]) for h in output.hidden_states] == expected
        assert [h.shape[1] for h in output.hidden_states] == model.config.hidden_sizes
        assert all(torch.isfinite(m).all() for m in _maps(output))

    def test_return_dict_false_gives_the_same_tensors(self, pixel_values):
        model = self.build()
        with torch.no_grad():
            as_dict, as_tuple = model(pixel_values), model(pixel_values, return_dict=False)
        assert isinstance(as_tuple, tuple)
        first = as_dict.to_tuple()[0]
        first = first if isinstance(first, torch.Tensor) else first[0]
        other = as_tuple[0] if isinstance(as_tuple[0], torch.Tensor) else as_tuple[0][0]
        torch.testing.assert_close(first, other)

    def test_hidden_states_and_attentions_on_request(self, pixel_values):
        model = self.build(attn_implementation="eager")
        with torch.no_grad():
            plain = model(pixel_values)
            full = model(pixel_values, output_hidden_states=True, output_attentions=True)
        assert plain.hidden_states is None and plain.attentions is None
        assert len(full.attentions) == sum(model.config.depths)
        first = full.attentions[0]  # (B, heads, N, M): stage 1 has 25*33 queries and ceil(25/8)*ceil(33/8) keys
        assert first.shape == (2, 1, 25 * 33, 3 * 4)
        torch.testing.assert_close(first.sum(-1), torch.ones_like(first.sum(-1)))
        for a, b in zip(_maps(plain), _maps(full)):  # returning the maps changes nothing else
            torch.testing.assert_close(a, b, atol=0, rtol=0)

    def test_sdpa_is_the_default_and_returns_no_attention_maps(self, pixel_values, caplog):
        """As on transformers' Segformer: SDPA computes no weights, so it warns and `attentions` is empty."""
        model = self.build()
        assert model.config._attn_implementation == "sdpa"
        warning_once.cache_clear()  # transformers logs the warning once per process
        with torch.no_grad(), caplog.at_level(logging.WARNING):
            output = model(pixel_values, output_attentions=True)
        assert output.attentions == ()
        assert SDPA_WARNING in caplog.text

    def test_eager_and_sdpa_agree_and_switch_at_run_time(self, pixel_values):
        model = self.build()
        with torch.no_grad():
            sdpa = model(pixel_values, output_hidden_states=True)
            model.set_attn_implementation("eager")
            assert model.config._attn_implementation == "eager"
            eager = model(pixel_values, output_hidden_states=True, output_attentions=True)
            built_eager = self.build(attn_implementation="eager")(pixel_values, output_attentions=True)
            model.set_attn_implementation("sdpa")
            back = model(pixel_values)
        assert model.config._attn_implementation == "sdpa"
        for a, b in zip((*_maps(sdpa), *sdpa.hidden_states), (*_maps(eager), *eager.hidden_states)):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
        assert len(eager.attentions) == len(built_eager.attentions) == sum(model.config.depths)
        for a, b in zip(eager.attentions, built_eager.attentions):
            torch.testing.assert_close(a, b, atol=0, rtol=0)
        for a, b in zip(_maps(sdpa), _maps(back)):
            torch.testing.assert_close(a, b, atol=0, rtol=0)

    def test_from_pretrained_takes_attn_implementation(self, tmp_path, pixel_values):
        self.build().save_pretrained(tmp_path)
        assert self.model_class.from_pretrained(tmp_path).config._attn_implementation == "sdpa"
        eager = self.model_class.from_pretrained(tmp_path, attn_implementation="eager")
        assert eager.config._attn_implementation == "eager"
        with torch.no_grad():
            assert len(eager(pixel_values, output_attentions=True).attentions) == sum(eager.config.depths)

    def test_unknown_attn_implementation_is_refused(self, tmp_path):
        model = self.build()
        with pytest.raises(ValueError, match=UNKNOWN_IMPLEMENTATION):
            model.set_attn_implementation("foo")
        assert model.config._attn_implementation == "sdpa"
        model.save_pretrained(tmp_path)
        with pytest.raises(ValueError, match=UNKNOWN_IMPLEMENTATION):
            self.model_class.from_pretrained(tmp_path, attn_implementation="foo")

    def test_wrong_channel_count_is_refused(self):
        with pytest.raises(ValueError, match=r"expected shape \(batch, 3, height, width\).*found \(1, 4, 32, 32\)"):
            self.build()(torch.randn(1, 4, 32, 32))

    def test_gradient_checkpointing_gives_the_same_gradients(self, pixel_values):
        grads = []
        for checkpointing in (False, True):
            model = self.build(drop_path_rate=0.3).train()
            if checkpointing:
                model.activation_checkpointing_enable()
                blocks = [m for m in model.modules() if type(m).__name__ == "MixTransformerBlock"]
                assert blocks and all(block.gradient_checkpointing for block in blocks)
            torch.manual_seed(1)  # same drop-path masks; checkpointing replays them on recompute
            sum(m.float().pow(2).mean() for m in _maps(model(pixel_values))).backward()
            grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
        assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 0
        for name in grads[0]:
            torch.testing.assert_close(grads[0][name], grads[1][name], msg=name)

    def test_stochastic_depth_only_in_training(self, pixel_values):
        model = self.build(drop_path_rate=0.5)
        with torch.no_grad():
            eval_runs = [_maps(model(pixel_values))[-1] for _ in range(2)]
            model.train()
            train_runs = [_maps(model(pixel_values))[-1] for _ in range(4)]
        torch.testing.assert_close(eval_runs[0], eval_runs[1])
        assert any(not torch.allclose(train_runs[0], other) for other in train_runs[1:])

    def test_batch_items_are_independent_in_eval(self, pixel_values):
        model = self.build()
        with torch.no_grad():
            together = _maps(model(pixel_values))[0]
            alone = _maps(model(pixel_values[1:]))[0]
        torch.testing.assert_close(together[1:], alone, atol=1e-5, rtol=1e-4)

    def test_save_and_auto_load_round_trip(self, tmp_path, pixel_values):
        model = self.build()
        model.save_pretrained(tmp_path)
        # AutoBackbone.from_pretrained asks the Hub whether a *local* path is a repo (transformers 5.24),
        # so the backbone class loads directly; Auto dispatch for it is covered by from_config.
        loader = self.model_class if self.auto_class is AutoBackbone else self.auto_class
        loaded = loader.from_pretrained(tmp_path)
        assert type(loaded) is self.model_class
        assert type(self.auto_class.from_config(model.config)) is self.model_class
        with torch.no_grad():
            for a, b in zip(_maps(model(pixel_values)), _maps(loaded(pixel_values))):
                torch.testing.assert_close(a, b, atol=0, rtol=0)


class TestMixTransformerModel(MixTransformerTester):
    model_class, auto_class = MixTransformerModel, AutoModel

    def test_last_hidden_state_is_the_last_stage(self, pixel_values):
        output = self.build()(pixel_values, output_hidden_states=True)
        assert output.last_hidden_state.shape == (2, 16, 4, 5)
        assert output.last_hidden_state is output.hidden_states[-1]


class TestMixTransformerForSemanticSegmentation(MixTransformerTester):
    model_class, auto_class = MixTransformerForSemanticSegmentation, AutoModelForSemanticSegmentation

    def test_logits_at_quarter_scale_and_loss_at_label_size(self, pixel_values):
        model = self.build()
        labels = torch.randint(0, 5, (2, 97, 131))
        labels[:, :10] = 255
        output = model(pixel_values, labels=labels)
        assert output.logits.shape == (2, 5, 25, 33)
        upsampled = torch.nn.functional.interpolate(output.logits, size=(97, 131), mode="bilinear", align_corners=False)
        expected = torch.nn.functional.cross_entropy(upsampled, labels, ignore_index=255)
        torch.testing.assert_close(output.loss, expected)

    def test_decode_head_never_builds_the_concatenation(self, pixel_values):
        model = self.build(decoder_hidden_size=32).train()
        labels = torch.randint(0, 5, (2, 97, 131))
        with TensorShapes() as log:
            model(pixel_values, labels=labels).loss.backward()
        quarter = (25, 33)
        assert (2, 32, *quarter) in log.shapes  # the fused map exists ...
        assert not any(
            len(s) == 4 and s[1] == 4 * 32 and s[2:] == quarter for s in log.shapes
        )  # ... its 4*D input never
        assert (4 * 32, 25 * 33) not in log.shapes and (2, 4 * 32, 25 * 33) not in log.shapes

    def test_traces_as_one_graph_for_torch_compile(self, pixel_values):
        model = self.build(drop_path_rate=0.2).train()
        explanation = torch._dynamo.explain(model)(pixel_values, labels=torch.randint(0, 5, (2, 97, 131)))
        assert (explanation.graph_count, explanation.graph_break_count) == (1, 0)

    def test_ignore_index_comes_from_the_config(self, pixel_values):
        model = self.build(semantic_loss_ignore_index=3)
        labels = torch.full((2, 97, 131), 3)
        labels[:, 0, 0] = 1
        output = model(pixel_values, labels=labels)
        upsampled = torch.nn.functional.interpolate(output.logits, size=(97, 131), mode="bilinear", align_corners=False)
        # Only the two labelled pixels count.
        expected = torch.nn.functional.cross_entropy(upsampled[:, :, 0, 0], labels[:, 0, 0])
        torch.testing.assert_close(output.loss, expected)

    def test_single_label_uses_masked_binary_cross_entropy(self, pixel_values):
        model = self.build(num_labels=1)
        labels = torch.randint(0, 2, (2, 97, 131))
        labels[:, :5] = 255
        output = model(pixel_values, labels=labels)
        assert output.logits.shape == (2, 1, 25, 33)
        upsampled = torch.nn.functional.interpolate(output.logits, size=(97, 131), mode="bilinear", align_corners=False)
        per_pixel = torch.nn.functional.binary_cross_entropy_with_logits(
            upsampled[:, 0], labels.float(), reduction="none"
        )
        torch.testing.assert_close(output.loss, (per_pixel * (labels != 255)).mean())

    def test_eager_trains_like_sdpa(self, pixel_values):
        labels = torch.randint(0, 5, (2, 97, 131))
        losses, grads = [], []
        for implementation in ("sdpa", "eager"):
            model = self.build(implementation, drop_path_rate=0.0, classifier_dropout_prob=0.0).train()
            loss = model(pixel_values, labels=labels).loss
            loss.backward()
            losses.append(loss)
            grads.append({n: p.grad for n, p in model.named_parameters()})
        torch.testing.assert_close(losses[0], losses[1], atol=1e-6, rtol=0)
        for name in grads[0]:
            torch.testing.assert_close(grads[0][name], grads[1][name], atol=1e-5, rtol=1e-4, msg=name)

    def test_labels_of_the_wrong_rank_are_refused(self, pixel_values):
        with pytest.raises(
            ValueError, match=r"labels: expected shape \(batch, height, width\), found \(2, 1, 97, 131\)"
        ):
            self.build()(pixel_values, labels=torch.zeros(2, 1, 97, 131, dtype=torch.long))

    def test_loss_is_float32_under_bfloat16_autocast(self, pixel_values):
        model = self.build().train()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            output = model(pixel_values, labels=torch.randint(0, 5, (2, 97, 131)))
        assert output.loss.dtype == torch.float32 and torch.isfinite(output.loss)


class TestMixTransformerBackbone(MixTransformerTester):
    model_class, auto_class = MixTransformerBackbone, AutoBackbone

    def test_out_features_select_feature_maps(self, pixel_values):
        model = self.build(out_features=["stage2", "stage4"])
        output = model(pixel_values)
        assert [tuple(f.shape) for f in output.feature_maps] == [(2, 8, 13, 17), (2, 16, 4, 5)]
        assert model.channels == [8, 16]


def test_attention_maps_match_stock_segformer():
    """Same weights, eager on both sides: transformers' Segformer's maps; under SDPA, neither returns any."""
    # Stock Segformer ignores layer_norm_eps (LayerNorm's default 1e-5 throughout): match it, so only the maps differ.
    reference, ours = (model.eval() for model in segformer_pair(tiny_config(layer_norm_eps=1e-5)))
    pixels = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert (
            reference(pixels, output_attentions=True).attentions
            == ours(pixels, output_attentions=True).attentions
            == ()
        )
        for model in (reference, ours):
            model.set_attn_implementation("eager")
        expected = reference(pixels, output_attentions=True).attentions
        found = ours(pixels, output_attentions=True).attentions
    assert len(found) == len(expected) == 4
    for block, (a, b) in enumerate(zip(found, expected)):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0, msg=f"block {block}")
