"""Training augmentation (mmseg pipeline, keyed randomness), eval items, collation and loaders."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision import tv_tensors

from segtune.data import LabelSpec, build_datasets, eval_collate, make_loader, train_collate
from segtune.data.transforms import PhotoMetricDistortion, RandomResizeCrop, rotate_hue
from tests.data_fixtures import isolated_datasets_cache, make_folder, recipe, save  # noqa: F401 (fixture)


@pytest.fixture
def folder(tmp_path):
    return make_folder(tmp_path, "split", count=4)


def folder_data(folder, *overrides):
    return build_datasets(recipe("data.source=folder", f"data.path={folder}", "data.num_labels=3", *overrides))


def test_train_item_shapes_and_dtypes(folder):
    item = folder_data(folder).train[0]
    assert item["pixel_values"].dtype == torch.float32 and item["pixel_values"].shape == (3, 32, 32)
    assert item["labels"].dtype == torch.int64 and item["labels"].shape == (32, 32)
    assert set(item["labels"].unique().tolist()) <= {0, 1, 2, 255}


def test_small_images_are_padded_with_zero_and_ignore(folder):
    # 24x32 scenes fit inside scale (64, 32) at ratio 1: 32x43, padded to the 48x48 crop
    data = folder_data(folder, "augment.crop_size=[48,48]", "augment.ratio_range=[1,1]", "augment.photometric=false")
    item = data.train[3]
    assert (item["labels"][32:] == 255).all() and (item["labels"][:, 43:] == 255).all()
    assert (item["labels"][:32, :43] != 255).all()
    assert (item["pixel_values"][:, 32:] == 0).all() and (item["pixel_values"][:, :, 43:] == 0).all()


def test_same_key_same_item_and_keys_wrap(folder):
    data = folder_data(folder)
    first, again = data.train[7], data.train[7]
    assert torch.equal(first["pixel_values"], again["pixel_values"]) and torch.equal(first["labels"], again["labels"])
    assert not torch.equal(data.train[7]["pixel_values"], data.train[11]["pixel_values"])  # same sample, new draw
    fixed = folder_data(
        folder,
        "augment.ratio_range=[1,1]",
        "augment.flip_prob=0",
        "augment.photometric=false",
        "augment.crop_size=[32,43]",
    )
    assert torch.equal(fixed.train[1]["pixel_values"], fixed.train[1 + 4 * 3]["pixel_values"])  # key % len


def test_seed_changes_the_draws_and_global_rng_is_untouched(folder):
    state = torch.get_rng_state()
    a = folder_data(folder, "train.seed=0").train[2]["pixel_values"]
    b = folder_data(folder, "train.seed=1").train[2]["pixel_values"]
    assert not torch.equal(a, b)
    assert torch.equal(torch.get_rng_state(), state)


def test_items_do_not_depend_on_workers(folder):
    data = folder_data(folder)
    keys = [5, 0, 17, 2, 9, 30, 3, 12]

    def batches(workers):
        loader = make_loader(data.train, batch_size=4, num_workers=workers, sampler=keys)
        return list(loader)

    serial, parallel = batches(0), batches(2)
    for a, b in zip(serial, parallel):
        assert torch.equal(a["pixel_values"], b["pixel_values"]) and torch.equal(a["labels"], b["labels"])


def test_image_and_mask_stay_aligned(tmp_path):
    """Pixels encode their class; after crop, flip and padding every labelled pixel still matches."""
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for i in range(3):
            mask = rng.integers(0, 3, (6, 8)).repeat(4, 0).repeat(4, 1).astype(np.uint8)  # 24x32 blocks
            save(tmp_path / split / "images" / f"{i}.png", np.repeat(mask[..., None] * 100, 3, axis=2).astype(np.uint8))
            save(tmp_path / split / "masks" / f"{i}.png", mask)
    data = folder_data(
        tmp_path,
        "augment.ratio_range=[1,1]",
        "augment.scale=[32,24]",
        "augment.crop_size=[16,20]",
        "augment.photometric=false",
        "augment.flip_prob=0.5",
        "augment.cat_max_ratio=1",
    )
    mean = torch.tensor(data.processor.image_mean)[:, None, None]
    std = torch.tensor(data.processor.image_std)[:, None, None]
    for key in range(12):
        item = data.train[key]
        pixels = ((item["pixel_values"] * std + mean) * 255).round()[0]
        labelled = item["labels"] != 255
        assert torch.equal(pixels[labelled], item["labels"][labelled].float() * 100)


@pytest.mark.parametrize(("ratio", "expected"), [(0.5, (50, 100)), (1.0, (100, 200)), (2.0, (200, 400))])
def test_random_resize_fits_the_scaled_target_keeping_ratio(ratio, expected):
    step = RandomResizeCrop(
        scale=(200, 100),
        ratio_range=(ratio, ratio),
        crop_size=(1000, 1000),
        cat_max_ratio=1.0,
        class_pixels=LabelSpec({0: "a"}).class_pixels,
    )
    image = tv_tensors.Image(torch.zeros(3, 100, 200, dtype=torch.uint8))
    mask = tv_tensors.Mask(torch.zeros(100, 200, dtype=torch.uint8))
    out_image, out_mask = step(image, mask)
    assert out_image.shape[-2:] == expected and out_mask.shape == expected
    # keep-ratio fit: a square image against (200, 50) is limited by the short side
    square = RandomResizeCrop((200, 50), (1.0, 1.0), (1000, 1000), 1.0, LabelSpec({0: "a"}).class_pixels)
    assert square(tv_tensors.Image(torch.zeros(3, 100, 100, dtype=torch.uint8))).shape[-2:] == (50, 50)


def test_cat_max_ratio_redraws_dominated_crops():
    mask = torch.zeros(64, 64, dtype=torch.uint8)
    mask[:16, :16] = torch.arange(2).repeat(16, 8)  # only the top-left corner holds two classes
    labels = LabelSpec({0: "a", 1: "b"})

    def balanced_share(cat_max_ratio):
        step = RandomResizeCrop((64, 64), (1.0, 1.0), (16, 16), cat_max_ratio, labels.class_pixels)
        image = tv_tensors.Image(torch.zeros(3, 64, 64, dtype=torch.uint8))
        hits = 0
        torch.manual_seed(0)
        for _ in range(200):
            _, crop = step(image, tv_tensors.Mask(mask))
            counts = labels.class_pixels(crop)
            hits += bool((counts > 0).sum() > 1 and counts.max() / counts.sum() < 0.75)
        return hits / 200

    # up to 10 re-draws: 1 - (1 - p)^11 of the crops come out balanced, against p without the rule
    assert balanced_share(0.75) > 4 * balanced_share(1.0) > 0


def test_photometric_distortion_changes_pixels_within_range():
    torch.manual_seed(0)
    step = PhotoMetricDistortion(32 / 255, (0.5, 1.5), (0.5, 1.5), 0.1)
    image = tv_tensors.Image(torch.rand(3, 16, 16))
    mask = tv_tensors.Mask(torch.ones(16, 16, dtype=torch.uint8))
    changed = 0
    for _ in range(10):
        out, out_mask = step(image.clone(), mask)
        assert out.min() >= 0 and out.max() <= 1 and torch.equal(out_mask, mask)
        changed += not torch.allclose(out, image)
    assert changed >= 8  # each of four steps applies with probability 0.5


def test_rotate_hue_keeps_grey_and_turns_red_towards_yellow():
    grey = torch.full((3, 2, 2), 0.4)
    assert torch.allclose(rotate_hue(grey.clone(), 0.1), grey, atol=1e-6)
    colour = torch.rand(3, 4, 4)
    assert torch.allclose(rotate_hue(colour.clone(), 0.0), colour, atol=1e-6)
    red = torch.tensor([0.8, 0.2, 0.2])[:, None, None]
    turned = rotate_hue(red.clone(), 0.08).flatten()
    assert turned[1] > 0.2 and turned[2] < 0.2  # green up, blue down: towards yellow, as an HSV hue shift


def test_eval_item_keeps_native_labels(folder):
    data = folder_data(folder, "eval.resize=[64,48]")
    item = data.eval[0]
    assert item["pixel_values"].shape == (3, 48, 64)  # short side 48, ratio kept
    assert item["labels"].shape == (24, 32) and item["labels"].dtype == torch.int64
    assert item["image"].shape == (3, 24, 32) and item["image"].dtype == torch.uint8


def test_collation_and_loaders(folder):
    data = folder_data(folder)
    batch = train_collate([data.train[0], data.train[1]])
    assert batch["pixel_values"].shape == (2, 3, 32, 32) and batch["labels"].shape == (2, 32, 32)
    same = eval_collate([data.eval[0], data.eval[1], None])
    assert same["labels"].shape == (2, 24, 32) and same["image"].shape == (2, 3, 24, 32)
    small = dict(data.eval[2], labels=torch.zeros(5, 5, dtype=torch.long))
    mixed = eval_collate([data.eval[0], small])
    assert isinstance(mixed["labels"], list) and [t.shape for t in mixed["labels"]] == [(24, 32), (5, 5)]
    assert isinstance(mixed["pixel_values"], torch.Tensor)
    assert eval_collate([None])["labels"] == []
    loader = make_loader(data.eval, batch_size=2, num_workers=0)
    assert loader.collate_fn is eval_collate and not loader.pin_memory
    assert make_loader(data.train, 2, num_workers=1).persistent_workers
