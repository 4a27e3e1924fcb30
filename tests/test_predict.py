"""Inference for users: `segtune.segment`, `segtune predict` and `segtune evaluate`."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoModelForSemanticSegmentation, SegformerForSemanticSegmentation

import segtune
from segtune.commands import main
from segtune.evaluation import evaluate_checkpoint
from segtune.legend import legend_entries, legend_image, with_legend
from segtune.models.mix_transformer import MixTransformerConfig
from segtune.recipe import load_recipe
from segtune.visualize import overlay, to_pil
from tests.conftest import TINY_RUN


@pytest.fixture
def images(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for name, size in (("street", (96, 64)), ("field", (70, 50)), ("other", (96, 64))):
        path = tmp_path / f"{name}.png"
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def reference_labels(run, image: Image.Image) -> np.ndarray:
    """Class indices computed by hand: saved processor, model, logits upsampled to the image, argmax."""
    model = AutoModelForSemanticSegmentation.from_pretrained(run).eval()
    pixels = AutoImageProcessor.from_pretrained(run)(image, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        logits = model(pixel_values=pixels).logits
    up = torch.nn.functional.interpolate(logits, size=image.size[::-1], mode="bilinear", align_corners=False)
    return up.argmax(1)[0].numpy()


def test_predict_api_returns_class_maps_at_each_image_size(finished_run, images):
    opened = [Image.open(p).convert("RGB") for p in images]
    masks = segtune.segment(str(finished_run), [opened[0], images[1], images[2]], batch_size=2)
    assert [m.shape for m in masks] == [(64, 96), (50, 70), (64, 96)]
    for mask, image in zip(masks, opened):
        np.testing.assert_array_equal(mask, reference_labels(finished_run, image))
    slid = segtune.segment(str(finished_run), images[:1], mode="slide", crop_size=(32, 32), stride=(24, 24))
    assert slid[0].shape == (64, 96) and slid[0].max() < 6


def test_predict_command_writes_masks_overlays_and_raw_labels(finished_run, images, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["predict", "--model", str(finished_run), *map(str, images), "--out", str(out), "--raw"]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"{p.stem}_{kind}.png" for p in images for kind in ("mask", "overlay", "legend", "labels")
    )
    raw = np.asarray(Image.open(out / "street_labels.png"))
    image = Image.open(images[0]).convert("RGB")
    np.testing.assert_array_equal(raw, reference_labels(finished_run, image))
    config = json.loads((finished_run / "config.json").read_text())
    palette, id2label = config["palette"], {int(k): v for k, v in config["id2label"].items()}
    colour = np.asarray(Image.open(out / "street_mask.png"))
    np.testing.assert_array_equal(colour, np.array(palette, np.uint8)[raw])  # the mask is only class colours
    # The overlay, unchanged, above a legend of the classes in this image; the legend alone beside the mask.
    entries = legend_entries(np.unique(raw).tolist(), id2label, palette)
    assert [name for _, name, _ in entries] == [id2label[c] for c in np.unique(raw)]
    drawn = np.asarray(Image.open(out / "street_overlay.png"))
    np.testing.assert_array_equal(drawn[:64, :96], overlay(image, raw, palette).permute(1, 2, 0).numpy())
    np.testing.assert_array_equal(drawn, np.asarray(with_legend(to_pil(overlay(image, raw, palette)), entries)))
    assert drawn.shape[0] > 64 + 18
    np.testing.assert_array_equal(np.asarray(Image.open(out / "street_legend.png")), np.asarray(legend_image(entries)))


def test_unreadable_image_is_named_and_the_rest_still_written(finished_run, images, tmp_path, capsys):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG not really")
    out = tmp_path / "out"
    assert main(["predict", "--model", str(finished_run), str(images[0]), str(broken), "--out", str(out)]) == 1
    assert f"{broken}: cannot read the image" in capsys.readouterr().err
    assert (out / "street_mask.png").is_file() and not (out / "broken_mask.png").exists()


def test_bad_checkpoints_get_clear_errors(finished_run, tmp_path, images, capsys):
    assert (
        main(["predict", "--model", str(tmp_path / "nowhere" / "x"), str(images[0]), "--out", str(tmp_path / "o")]) == 1
    )
    assert "no such local directory" in capsys.readouterr().err
    incomplete = shutil.copytree(finished_run, tmp_path / "incomplete")
    (incomplete / "model.safetensors").unlink()
    assert main(["predict", "--model", str(incomplete), str(images[0]), "--out", str(tmp_path / "o")]) == 1
    assert "not a model checkpoint; expected config.json and weights (*.safetensors)" in capsys.readouterr().err


def test_evaluate_reproduces_the_runs_own_metrics(finished_run, capsys):
    recipe = load_recipe(finished_run / "recipe.yaml")
    results, names = evaluate_checkpoint(str(finished_run), recipe)
    recorded = json.loads((finished_run / "metrics.json").read_text())
    assert float(results["mean_iou"]) == pytest.approx(recorded["mean_iou"])
    assert names[1] == "disc"
    assert main(["evaluate", "--model", str(finished_run), "--recipe", str(finished_run / "recipe.yaml")]) == 0
    assert "disc" in capsys.readouterr().out


def test_evaluate_a_transformers_checkpoint_and_refuse_a_label_mismatch(tmp_path, capsys):
    recipe_args = ["--recipe", "demo.yaml", "--set", *TINY_RUN]
    stock = SegformerForSemanticSegmentation(
        MixTransformerConfig.from_variant("mit-b0", num_labels=6).to_segformer_config()
    )
    stock.save_pretrained(tmp_path / "stock")
    assert main(["evaluate", "--model", str(tmp_path / "stock"), *recipe_args, "--json", str(tmp_path / "r.json")]) == 0
    assert set(json.loads((tmp_path / "r.json").read_text())) >= {"mean_iou", "per_category_iou"}
    wrong = SegformerForSemanticSegmentation(
        MixTransformerConfig.from_variant("mit-b0", num_labels=150).to_segformer_config()
    )
    wrong.save_pretrained(tmp_path / "wrong")
    assert main(["evaluate", "--model", str(tmp_path / "wrong"), *recipe_args]) == 1
    assert "predicts 150 classes; the recipe's data has 6" in capsys.readouterr().err


def test_segment_finds_a_loaded_models_image_processor_or_says_it_needs_one(finished_run, images):
    loaded = AutoModelForSemanticSegmentation.from_pretrained(finished_run)
    np.testing.assert_array_equal(
        segtune.segment(loaded, images[:1])[0], segtune.segment(str(finished_run), images[:1])[0]
    )
    built = segtune.MixTransformerForSemanticSegmentation(MixTransformerConfig(num_labels=3))
    with pytest.raises(segtune.models.CheckpointError, match=r"no image processor .* pass processor="):
        segtune.segment(built, images[:1])
    with pytest.raises(TypeError, match="window"):
        segtune.segment(str(finished_run), images[:1], window=3)  # not an eval setting


def test_overlay_blends_each_class_colour_and_keeps_ignored_pixels():
    image = torch.randint(0, 256, (3, 4, 5), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    mask = torch.tensor([[0, 1, 2, 255, 7]] * 4)  # 255: ignored; 7: outside the palette
    palette = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    out = overlay(image, mask, palette, alpha=0.5)
    for column, colour in enumerate(palette):
        expected = image[:, :, column].float() * 0.5 + torch.tensor(colour).view(3, 1) * 0.5
        assert torch.equal(out[:, :, column], expected.to(torch.uint8))
    assert torch.equal(out[:, :, 3:], image[:, :, 3:])
    assert torch.equal(overlay(image, torch.full((4, 5), 255), palette), image)


def test_predict_tile_streams_tiffs_with_the_sliding_windows_labels(finished_run, tmp_path, capsys):
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, (300, 200, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "big.tif", pixels, tile=(64, 64), compression="zlib")
    Image.fromarray(pixels[:70, :90]).save(tmp_path / "small.png")
    missing = tmp_path / "missing.tif"
    window = ["--crop_size", "64", "64", "--stride", "48", "40"]
    command = ["predict", "--model", str(finished_run), str(tmp_path / "big.tif"), str(missing)]
    out = tmp_path / "out"
    assert main([*command, str(tmp_path / "small.png"), "--out", str(out), "--tile", *window]) == 1
    assert f"error: {missing}: cannot read the image ([Errno 2] No such file" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"{stem}_{kind}" for stem in ("big", "small") for kind in ("labels.tif", "mask.tif", "legend.png")
    )
    config = json.loads((finished_run / "config.json").read_text())
    palette, id2label = config["palette"], {int(k): v for k, v in config["id2label"].items()}
    library = segtune.segment(str(finished_run), [tmp_path / "big.tif"], tile=True, crop_size=(64, 64), stride=(48, 40))
    np.testing.assert_array_equal(library[0], tifffile.imread(out / "big_labels.tif"))
    for stem, image in (("big", pixels), ("small", pixels[:70, :90])):
        labels = tifffile.imread(out / f"{stem}_labels.tif")
        slid = segtune.segment(
            str(finished_run), [Image.fromarray(image)], mode="slide", crop_size=(64, 64), stride=(48, 40)
        )
        assert labels.dtype == np.uint8
        np.testing.assert_array_equal(labels, slid[0])
        np.testing.assert_array_equal(tifffile.imread(out / f"{stem}_mask.tif"), np.array(palette, np.uint8)[labels])
        entries = legend_entries(np.unique(labels).tolist(), id2label, palette)
        legend = np.asarray(Image.open(out / f"{stem}_legend.png"))
        np.testing.assert_array_equal(legend, np.asarray(legend_image(entries)))


def test_predict_tile_refuses_what_it_cannot_tile(finished_run, tmp_path, images, capsys):
    command = ["predict", "--model", str(finished_run), str(images[0]), "--out", str(tmp_path / "o"), "--tile"]
    assert main([*command, "--tta"]) == 1
    assert "error: tile: test-time augmentation (tta) rescales and flips the whole image" in capsys.readouterr().err
    resizing = shutil.copytree(finished_run, tmp_path / "resizing")
    settings = json.loads((resizing / "preprocessor_config.json").read_text())
    (resizing / "preprocessor_config.json").write_text(json.dumps({**settings, "do_resize": True}))
    assert main(["predict", "--model", str(resizing), str(images[0]), "--out", str(tmp_path / "o"), "--tile"]) == 1
    err = capsys.readouterr().err
    assert "error: tile: predicts at each image's own size, but the image processor resizes (size={'height': 512" in err
    assert not list((tmp_path / "o").glob("*.tif"))
