"""LoRA through peft (`model.peft`): the targets, the reported trainable count, the optimizer groups, the merged
output, exact resume, evaluation with ignored pixels, and the adapter's push and pull."""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from huggingface_hub import HfApi
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForSemanticSegmentation, SegformerForSemanticSegmentation

from segtune.commands import main
from segtune.errors import HubError, RecipeError
from segtune.evaluation import evaluate_checkpoint
from segtune.hub import build_card, push
from segtune.models.build import build_model
from segtune.models.lora import DEFAULT_TARGETS
from segtune.models.mix_transformer import MixTransformerForSemanticSegmentation
from segtune.recipe import OptimConfig, load_recipe
from segtune.train import train
from segtune.train.optim import parameter_groups
from tests.data_fixtures import save, scene
from tests.test_hub import logits
from tests.test_train import _interrupt_at_batch, assert_same_weights, tiny_recipe

LORA = ("model.peft.method=lora",)
SUMMARY = re.compile(
    r"^LoRA r=(\d+), alpha=(\d+) on (\d+) layers \((.*)\), decode_head in full: "
    r"([\d,]+) of ([\d,]+) parameters trainable \(([\d.]+)%\)$",
    re.MULTILINE,
)
LABELS = {i: f"c{i}" for i in range(6)}


def lora_model(*overrides: str):
    return build_model(load_recipe("demo.yaml", [*LORA, *overrides]).model, LABELS)


@pytest.mark.parametrize(
    "arch, layers, kinds",
    [
        ("mix_transformer", 24, {"attn.q", "attn.kv", "attn.proj"}),  # B0: 8 blocks
        ("segformer", 16, {"attention.q_proj", "attention.v_proj"}),  # PEFT's guide: query and value
    ],
)
def test_default_targets_adapt_the_attention_of_the_encoder_only(arch, layers, kinds):
    model = lora_model(f"model.arch={arch}")
    adapted = model.base_model.targeted_module_names
    assert len(adapted) == layers and {".".join(n.split(".")[-2:]) for n in adapted} == kinds
    assert not [n for n in adapted if "patch_embed" in n or "decode_head" in n]
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert all(".lora_" in n or ".decode_head.modules_to_save." in n for n in trainable)
    head = {n for n, p in model.named_parameters() if ".decode_head.modules_to_save." in n}
    assert head and head <= trainable  # the whole head is trained
    assert DEFAULT_TARGETS[arch] == (
        ("attn.q", "attn.kv", "attn.proj") if arch == "mix_transformer" else ("q_proj", "v_proj")
    )


@pytest.mark.parametrize("arch", ["mix_transformer", "segformer"])
def test_lora_run_reports_peft_count_and_writes_the_merged_model(tmp_path, capsys, arch):
    out = tmp_path / "run"
    recipe = tiny_recipe(out, *LORA, f"model.arch={arch}", "model.peft.r=4", "model.peft.alpha=8")
    train(recipe)
    [line] = SUMMARY.findall(capsys.readouterr().out)
    peft_model = build_model(recipe.model, LABELS)
    trainable, total = peft_model.get_nb_trainable_parameters()
    assert (int(line[0]), int(line[1])) == (4, 8)
    assert (
        int(line[4].replace(",", "")) == trainable == sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    )
    assert int(line[5].replace(",", "")) == total and float(line[6]) == pytest.approx(100 * trainable / total, abs=5e-3)
    # The output is an ordinary model of the arch, saved with the keys a plain model's save gives.
    merged = AutoModelForSemanticSegmentation.from_pretrained(out)
    plain = build_model(load_recipe("demo.yaml", [f"model.arch={arch}"]).model, LABELS)
    plain.save_pretrained(tmp_path / "plain")
    assert type(merged) is type(plain)
    assert set(load_file(out / "model.safetensors")) == set(load_file(tmp_path / "plain" / "model.safetensors"))
    # ...whose logits are the trained PEFT model's (its last checkpoint).
    peft_model.load_state_dict(load_file(out / "checkpoints" / "step-00000004" / "model.safetensors"))
    torch.testing.assert_close(logits(merged), logits(peft_model), atol=1e-5, rtol=0)
    assert logits(merged).abs().max() > 1e-2  # not a trivially small output
    assert {p.name for p in (out / "adapter").iterdir()} == {
        "adapter_config.json",
        "adapter_model.safetensors",
        "preprocessor_config.json",
    }


def test_optimizer_groups_read_peft_names(tmp_path):
    model = lora_model()
    optim = OptimConfig(lr=1e-4, weight_decay=0.01, head_lr_mult=10.0, norm_weight_decay=0.0)
    groups = {g["name"]: g for g in parameter_groups(model, optim)}
    names = {id(p): n for n, p in model.named_parameters()}
    grouped = {name: [names[id(p)] for p in group["params"]] for name, group in groups.items()}
    assert set(groups) == {"encoder", "head", "head_no_decay"}  # LoRA has no biases or norms
    trainable = sorted(n for n, p in model.named_parameters() if p.requires_grad)
    assert sorted(sum(grouped.values(), [])) == trainable  # every trainable parameter once, nothing frozen
    assert all(".lora_A." in n or ".lora_B." in n for n in grouped["encoder"])
    prefix = "base_model.model.decode_head.modules_to_save.default."
    assert all(n.startswith(prefix) for n in grouped["head"] + grouped["head_no_decay"])
    assert (
        f"{prefix}batch_norm.weight" in grouped["head_no_decay"]
        and f"{prefix}classifier.bias" in grouped["head_no_decay"]
    )
    assert f"{prefix}classifier.weight" in grouped["head"]
    assert groups["head"]["lr"] == pytest.approx(1e-3) and groups["encoder"]["lr"] == pytest.approx(1e-4)
    assert (groups["encoder"]["weight_decay"], groups["head_no_decay"]["weight_decay"]) == (0.01, 0.0)


def test_interrupted_and_resumed_lora_run_equals_a_straight_one(tmp_path, monkeypatch):
    common = (*LORA, "train.max_steps=6", "model.peft.dropout=0.2", "model.classifier_dropout_prob=0.2")
    train(tiny_recipe(tmp_path / "straight", *common))
    with monkeypatch.context() as patch:
        _interrupt_at_batch(patch, 4, "ctrl-c")  # step 3 saved on the way out
        with pytest.raises(Exception, match=r"interrupted \(Ctrl-C\) at step 3"):
            train(tiny_recipe(tmp_path / "resumed", *common))
    train(tiny_recipe(tmp_path / "resumed", *common), resume="latest")
    assert_same_weights(tmp_path / "straight", tmp_path / "resumed")
    straight, resumed = (
        load_file(tmp_path / r / "adapter" / "adapter_model.safetensors") for r in ("straight", "resumed")
    )
    assert straight.keys() == resumed.keys() and all(torch.equal(straight[k], resumed[k]) for k in straight)


def test_evaluation_of_the_peft_model_equals_the_merged_model_with_ignored_pixels(tmp_path):
    """peft #1927 scored ignored pixels wrongly; here the PEFT model (during training) and the merged one agree."""
    root = tmp_path / "data"
    for split, seed in (("train", 0), ("val", 100)):
        for i in range(4):
            image, mask = scene(seed + i, height=64, width=64)
            if split == "val":
                mask[:, ::3] = 255  # a third of every validation mask is ignored
            save(root / split / "images" / f"{i}.png", image)
            save(root / split / "masks" / f"{i}.png", mask)
    recipe = tiny_recipe(
        tmp_path / "run",
        *LORA,
        "data.source=folder",
        f"data.path={root}",
        "data.num_labels=3",
    )
    during = train(recipe)
    after, _ = evaluate_checkpoint(str(tmp_path / "run"), recipe)
    pixels_scored = 4 * 64 * (64 - len(range(0, 64, 3)))
    assert during["confusion_matrix"].sum() == after["confusion_matrix"].sum() == pixels_scored
    np.testing.assert_array_equal(during["confusion_matrix"], after["confusion_matrix"])
    assert float(after["mean_iou"]) == float(during["mean_iou"])
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["mean_iou"] == float(during["mean_iou"])


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            ["model.peft.target_modules=[query,value]", "model.arch=segformer"],
            r"'query' matches no linear layer \(transformers 5 renamed Segformer's 'query' to 'q_proj'\).*"
            r"those of SegformerForSemanticSegmentation are \['attention.q_proj', 'attention.k_proj', ",
        ),
        (
            ["model.peft.target_modules=[attn.q,qkv]"],
            r"^model.peft.target_modules: 'qkv' matches no linear layer\. Expected names of encoder linear layers; "
            r"those of MixTransformerForSemanticSegmentation are \['attn.q', 'attn.kv', 'attn.proj', 'mlp.fc1', "
            r"'mlp.fc2'\]$",
        ),
        (
            ["model.peft.target_modules=[proj]"],
            r"'proj' also matches layers that are not linear, \['patch_embed.proj \(Conv2d\)'\]: name the layer more fully",
        ),
        (
            ["model.peft.target_modules=[linear_c.0]"],
            r"'linear_c.0' matches layers of the decode head, which is trained in full",
        ),
        (["model.peft.target_modules=[dwconv]"], r"'dwconv' matches no linear layer"),
    ],
)
def test_targets_that_do_not_fit_are_refused_naming_the_linear_layers(overrides, message):
    with pytest.raises(RecipeError, match=message):
        lora_model(*overrides)


@pytest.mark.parametrize(
    "override, message",
    [
        ("model.peft.method=qlora", r"model.peft.method: expected one of \['none', 'lora'\], found 'qlora'"),
        ("model.peft.r=0", r"model.peft.r: expected positive, found 0"),
        ("model.peft.alpha=-1", r"model.peft.alpha: expected positive, found -1.0"),
        ("model.peft.dropout=1", r"model.peft.dropout: expected a probability in \[0, 1\), found 1.0"),
        ("model.peft.target_modules=[]", r"model.peft.target_modules: expected layer names .* found \[\]"),
        (
            "hub.adapter=true",
            r"hub.adapter: true pushes a LoRA adapter, which needs model.peft.method: lora; found 'none'",
        ),
    ],
)
def test_bad_peft_settings_are_refused_when_the_recipe_loads(override, message):
    with pytest.raises(RecipeError, match=message):
        load_recipe("demo.yaml", [override])


def test_without_peft_installed_the_error_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "peft", None)  # `import peft` raises ImportError
    with pytest.raises(
        RecipeError, match=r'lora needs the peft library, which is not installed: pip install "segtune\[peft\]"'
    ):
        lora_model()
    assert not isinstance(build_model(load_recipe("demo.yaml").model, LABELS), PeftModel)  # full fine-tuning needs none


# -- the Hub -------------------------------------------------------------------------------------------------------

BASE, ADAPTER = "user/base", "user/lora-adapter"
ADAPTER_FILES = {
    "adapter_config.json",
    "adapter_model.safetensors",
    "preprocessor_config.json",
    "id2label.json",
    "recipe.yaml",
    "metrics.json",
    "per_class_iou.md",
    "predictions.png",
    "README.md",
    ".gitattributes",
}


@pytest.fixture
def lora_run_on_a_hub_base(hub_env, finished_run, tmp_path) -> Path:
    """A LoRA run started from a base model on the loopback Hub (the finished demo run, pushed), whose recipe pushes
    its adapter to ADAPTER at the end."""
    push(shutil.copytree(finished_run, tmp_path / "base"), BASE)
    out = tmp_path / "lora"
    from_hub = ("model.init=pretrained", f"model.init_from={BASE}")
    train(
        tiny_recipe(
            out, *LORA, *from_hub, "train.max_steps=2", "hub.push=true", "hub.adapter=true", f"hub.repo_id={ADAPTER}"
        )
    )
    return out


def test_adapter_push_round_trip_through_peft(hub_env, lora_run_on_a_hub_base):
    out = lora_run_on_a_hub_base
    assert set(hub_env.resolve(hub_env.repo(ADAPTER), "main").files) == ADAPTER_FILES
    card = hub_env.stored_file(ADAPTER, "README.md").read_text()
    meta = yaml.safe_load(card.split("---\n")[1])
    assert (meta["library_name"], meta["base_model"], meta["base_model_relation"]) == ("peft", BASE, "adapter")
    assert {"lora", "peft"} <= set(meta["tags"])
    assert (out / "adapter" / "README.md").read_text() == card and not (out / "README.md").exists()
    assert f"It needs its base model, **`{BASE}`**" in card and f'PeftModel.from_pretrained(base, "{ADAPTER}")' in card
    assert "local folder" not in card
    assert (
        json.loads(hub_env.stored_file(ADAPTER, "adapter_config.json").read_text())["base_model_name_or_path"] == BASE
    )
    # Loaded back as the card says: the base model from the Hub, the adapter through peft.
    id2label = {int(k): v for k, v in json.loads(hub_env.stored_file(ADAPTER, "id2label.json").read_text()).items()}
    base = MixTransformerForSemanticSegmentation.from_pretrained(
        BASE, num_labels=len(id2label), id2label=id2label, ignore_mismatched_sizes=True
    )
    adapted = PeftModel.from_pretrained(base, ADAPTER)
    merged = AutoModelForSemanticSegmentation.from_pretrained(out)
    torch.testing.assert_close(logits(adapted), logits(merged), atol=1e-5, rtol=0)


def test_a_lora_run_pushes_its_merged_model_in_both_formats(hub_env, lora_run_on_a_hub_base, monkeypatch, capsys):
    out = lora_run_on_a_hub_base
    assert main(["push", str(out), "--repo_id", "user/merged", "--no-adapter"]) == 0  # the recipe says hub.adapter
    with monkeypatch.context() as patch:  # a failed push is retried as what it was, whatever the recipe says
        patch.setattr(HfApi, "upload_folder", lambda self, **kwargs: (_ for _ in ()).throw(ConnectionError("down")))
        with pytest.raises(HubError, match="push to user/merged-stock failed"):
            push(out, "user/merged-stock", model_format="segformer", adapter=False)
    assert main(["push", str(out)]) == 0
    assert re.search(r"^pushed: .*user/merged-stock", capsys.readouterr().out, re.MULTILINE)
    for repo in ("user/merged", "user/merged-stock"):
        files = hub_env.resolve(hub_env.repo(repo), "main").files
        assert "model.safetensors" in files and not [
            n for n in files if n.startswith("adapter") or n == "id2label.json"
        ]
    local = logits(AutoModelForSemanticSegmentation.from_pretrained(out))
    torch.testing.assert_close(
        logits(AutoModelForSemanticSegmentation.from_pretrained("user/merged")), local, atol=0, rtol=0
    )
    stock = SegformerForSemanticSegmentation.from_pretrained("user/merged-stock")
    torch.testing.assert_close(logits(stock), local, atol=1e-4, rtol=0)


def test_adapter_push_is_refused_without_a_loadable_base(hub_env, finished_run, tmp_path, capsys):
    full = shutil.copytree(finished_run, tmp_path / "full")
    assert main(["push", str(full), "--repo_id", ADAPTER, "--adapter"]) == 1
    assert re.search(r"adapter to push .* with model.peft.method: lora; this run's is 'none'", capsys.readouterr().err)
    out = tmp_path / "random"
    train(tiny_recipe(out, *LORA, "train.max_steps=2"))
    with pytest.raises(HubError, match=r"needs its base model's weights, and this run started from random weights"):
        push(out, ADAPTER, adapter=True)
    with pytest.raises(KeyError):  # refused before any request
        hub_env.repo(ADAPTER)


def test_the_adapter_card_says_when_its_base_was_a_local_folder(finished_run):
    recipe = load_recipe("demo.yaml", [*LORA, "model.init=pretrained", f"model.init_from={finished_run}"])
    card = str(build_card(ADAPTER, recipe, json.loads((finished_run / "metrics.json").read_text()), "", adapter=True))
    assert f"It needs its base model, **`{finished_run}`**" in card
    assert "It was a local folder where the adapter was trained: publish that model too" in card
