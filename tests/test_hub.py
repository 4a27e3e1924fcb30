"""Push and pull through the real huggingface_hub and transformers clients, against servers on 127.0.0.1."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image
from transformers import (
    AutoImageProcessor,
    AutoModel,
    AutoModelForSemanticSegmentation,
    SegformerForSemanticSegmentation,
    pipeline,
)

from segtune.errors import HubError
from segtune.hub import push
from segtune.models.build import build_model
from segtune.recipe import load_recipe
from segtune.run_dir import PUSH_PENDING as PENDING_FILE
from tests.conftest import run_without_segtune

REPO = "user/tiny-segformer"
MODEL_FILES = {
    "config.json",
    "model.safetensors",
    "preprocessor_config.json",
    "configuration_mix_transformer.py",
    "modeling_mix_transformer.py",
    "convert_mix_transformer.py",
}
RUN_FILES = {"recipe.yaml", "metrics.json", "per_class_iou.md", "predictions.png"}


@pytest.fixture
def run_copy(finished_run, tmp_path) -> Path:
    """A private copy, so a test may leave files behind."""
    return Path(shutil.copytree(finished_run, tmp_path / "run"))


def pixels(seed: int = 0) -> torch.Tensor:
    return torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(seed))


def logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(pixel_values=pixels()).logits


def front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


def files_containing(root: Path, needle: bytes) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


def test_push_uploads_exactly_the_run_and_a_parsable_card(hub_env, run_copy, tmp_path):
    url = push(run_copy, REPO)
    assert REPO in url
    commit = hub_env.repo(REPO).branches["main"]
    stored = set(hub_env.resolve(hub_env.repo(REPO), "main").files)
    assert stored == MODEL_FILES | RUN_FILES | {"README.md", ".gitattributes"}, commit
    for name in MODEL_FILES | RUN_FILES:
        assert hub_env.stored_file(REPO, name).read_bytes() == (run_copy / name).read_bytes(), name
    card = hub_env.stored_file(REPO, "README.md").read_text()
    meta = front_matter(card)
    assert meta["library_name"] == "transformers" and meta["pipeline_tag"] == "image-segmentation"
    assert meta["license"] == "apache-2.0" and "segtune" in meta["tags"]
    result = meta["model-index"][0]["results"][0]
    assert result["task"]["type"] == "image-segmentation"
    assert {m["type"] for m in result["metrics"]} == {"mean_iou", "mean_accuracy", "overall_accuracy"}
    assert "| disc |" in card and "trust_remote_code=True" in card
    token = hub_env.token.encode()
    for root in (hub_env.root, run_copy, Path(os.environ["HF_HOME"])):
        assert files_containing(root, token) == [], root


def test_pulled_model_matches_the_local_one(hub_env, run_copy):
    push(run_copy, REPO)
    local = AutoModelForSemanticSegmentation.from_pretrained(run_copy)
    pulled = AutoModelForSemanticSegmentation.from_pretrained(REPO)
    assert type(pulled).__name__ == "MixTransformerForSemanticSegmentation"
    torch.testing.assert_close(logits(pulled), logits(local), atol=0, rtol=0)
    assert type(AutoModel.from_pretrained(REPO)).__name__ == "MixTransformerModel"
    assert (
        AutoImageProcessor.from_pretrained(REPO).image_mean == AutoImageProcessor.from_pretrained(run_copy).image_mean
    )
    segmenter = pipeline("image-segmentation", model=REPO)
    found = segmenter(Image.new("RGB", (80, 64), (120, 30, 200)))
    assert found and {r["label"] for r in found} <= set(pulled.config.id2label.values())
    assert found[0]["mask"].size == (80, 64)


NO_SEGTUNE = """
    import torch
    from PIL import Image
    from transformers import AutoImageProcessor, AutoModel, AutoModelForSemanticSegmentation, pipeline

    repo = sys.argv[1]
    model = AutoModelForSemanticSegmentation.from_pretrained(repo, trust_remote_code=True).eval()
    encoder = AutoModel.from_pretrained(repo, trust_remote_code=True)
    AutoImageProcessor.from_pretrained(repo)
    segmenter = pipeline("image-segmentation", model=repo, trust_remote_code=True)
    assert segmenter(Image.new("RGB", (64, 64)))
    pixels = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.save({"logits": model(pixel_values=pixels).logits, "encoder": type(encoder).__name__}, sys.argv[2])
"""


def test_pull_without_segtune_through_remote_code(hub_env, run_copy, tmp_path):
    push(run_copy, REPO)
    run_without_segtune(NO_SEGTUNE, REPO, str(tmp_path / "out.pt"), cwd=tmp_path)
    result = torch.load(tmp_path / "out.pt")
    assert result["encoder"] == "MixTransformerModel"
    local = AutoModelForSemanticSegmentation.from_pretrained(run_copy)
    torch.testing.assert_close(result["logits"], logits(local), atol=0, rtol=0)


def test_segformer_format_loads_with_plain_transformers(hub_env, run_copy):
    push(run_copy, REPO, model_format="segformer")
    stored = set(hub_env.resolve(hub_env.repo(REPO), "main").files)
    assert not any(name.endswith(".py") for name in stored)
    stock = SegformerForSemanticSegmentation.from_pretrained(REPO)
    local = AutoModelForSemanticSegmentation.from_pretrained(run_copy)
    torch.testing.assert_close(logits(stock), logits(local), atol=1e-4, rtol=0)


def test_failed_push_keeps_everything_and_the_next_push_retries(hub_env, run_copy, monkeypatch):
    before = {p.name: p.read_bytes() for p in run_copy.iterdir() if p.is_file()}
    from huggingface_hub import HfApi

    real_upload = HfApi.upload_folder

    def failing_upload(self, **kwargs):
        raise ConnectionRefusedError(111, "Connection refused")

    monkeypatch.setattr(HfApi, "upload_folder", failing_upload)
    with pytest.raises(
        HubError,
        match=rf"push to {REPO} failed \(ConnectionRefusedError.*everything is kept in .*run `segtune push ",
    ):
        push(run_copy, REPO)
    assert (run_copy / PENDING_FILE).is_file()
    assert all((run_copy / name).read_bytes() == data for name, data in before.items())
    monkeypatch.setattr(HfApi, "upload_folder", real_upload)
    push(run_copy)  # no repo id: taken from the failed attempt
    assert not (run_copy / PENDING_FILE).exists()
    assert hub_env.stored_file(REPO, "model.safetensors").read_bytes() == before["model.safetensors"]


def test_push_without_a_token_explains_how_to_log_in(hub_env, run_copy, monkeypatch):
    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(HubError, match=r"no Hugging Face token: run `hf auth login` or set HF_TOKEN"):
        push(run_copy, REPO)


def test_repo_with_an_unrelated_model_is_refused_unless_overwriting(hub_env, run_copy, tmp_path):
    from transformers import BertConfig, BertModel

    BertModel(BertConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=1, intermediate_size=8)).push_to_hub(
        REPO
    )
    with pytest.raises(HubError, match=rf"{REPO} already holds another model \(model_type 'bert'.*--overwrite"):
        push(run_copy, REPO)
    push(run_copy, REPO, overwrite=True)
    push(run_copy, REPO)  # the same model again: related, allowed


def test_push_of_an_unfinished_run_names_the_missing_file(hub_env, run_copy):
    (run_copy / "metrics.json").unlink()
    with pytest.raises(HubError, match=r"not a finished segtune run; missing \['metrics.json'\]"):
        push(run_copy, REPO)


def test_recipe_can_start_from_a_pushed_checkpoint(hub_env, run_copy):
    push(run_copy, REPO)
    recipe = load_recipe("demo.yaml", ["model.init=pretrained", f"model.init_from={REPO}"])
    model = build_model(recipe.model, {0: "a", 1: "b"})
    local = AutoModelForSemanticSegmentation.from_pretrained(run_copy)
    assert model.config.num_labels == 2  # a fresh 2-class classifier on the pushed encoder
    torch.testing.assert_close(
        model.mix_transformer.stages[0].blocks[0].attn.q.weight, local.mix_transformer.stages[0].blocks[0].attn.q.weight
    )


def test_pull_through_olah(olah_env, run_copy):
    olah_env.publish(REPO, run_copy)
    pulled = AutoModelForSemanticSegmentation.from_pretrained(REPO)
    local = AutoModelForSemanticSegmentation.from_pretrained(run_copy)
    torch.testing.assert_close(logits(pulled), logits(local), atol=0, rtol=0)


def test_unknown_repo_gets_a_clear_error(hub_env):
    from segtune.models import CheckpointError
    from segtune.models.loading import load_for_inference

    with pytest.raises(
        CheckpointError, match=r"user/no-such-model: cannot load the model: .*not a valid model identifier"
    ):
        load_for_inference("user/no-such-model")


def test_recipe_pushes_at_the_end_of_training(hub_env, tmp_path):
    from segtune.train import train
    from tests.conftest import TINY_RUN

    out = tmp_path / "run"
    recipe = load_recipe(
        "demo.yaml",
        [
            *TINY_RUN,
            "train.max_steps=2",
            f"train.output_dir={out}",
            "hub.push=true",
            "hub.repo_id=user/pushed-by-recipe",
            "hub.private=true",
        ],
    )
    train(recipe)
    assert hub_env.repo("user/pushed-by-recipe").private
    assert (
        hub_env.stored_file("user/pushed-by-recipe", "model.safetensors").read_bytes()
        == (out / "model.safetensors").read_bytes()
    )
