"""Training augmentation (mmseg pipeline, keyed randomness), eval items, collation and loaders."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as F
from torchvision import tv_tensors
from torchvision.transforms import v2

from segtune.data import LabelSpec, build_datasets, make_loader
from segtune.data.batch_preprocessor import photometric_distortion, rotate_hue
from segtune.data.loaders import eval_collate, train_collate
from segtune.data.transforms import PHOTOMETRIC_PARAMS, RandomRescaleCrop, draw_photometric
from segtune.errors import DatasetError
from tests.data_fixtures import folder_recipe, isolated_datasets_cache, make_folder, recipe, save  # noqa: F401 (fixture)


@pytest.fixture
def folder(tmp_path):
    return make_folder(tmp_path, "split", count=4)


def folder_data(folder, *overrides):
    return build_datasets(folder_recipe(folder, *overrides))


def test_train_item_is_compact_uint8_with_its_photometric_draw(folder):
    item = folder_data(folder).train[0]
    assert item["image"].dtype == torch.uint8 and item["image"].shape == (3, 32, 32)
    assert item["labels"].dtype == torch.uint8 and item["labels"].shape == (32, 32)
    assert set(item["labels"].unique().tolist()) <= {0, 1, 2, 255}
    assert item["photometric"].dtype == torch.float32 and item["photometric"].shape == (len(PHOTOMETRIC_PARAMS),)
    assert item["valid_size"].dtype == torch.int32 and item["valid_size"].shape == (2,)


def test_a_1024_crop_crosses_the_worker_boundary_in_under_4_2_mb(folder):
    """The issue's bar: 3 + 1 bytes a pixel, instead of float32 pixels and int64 labels (20 MB)."""
    data = folder_data(folder, "augment.crop_size=[1024,1024]")
    loader = make_loader(data.train, batch_size=2, num_workers=1, sampler=[0, 1])
    batch = next(iter(loader))
    assert batch["image"].dtype == torch.uint8 and batch["image"].shape == (2, 3, 1024, 1024)
    assert batch["labels"].dtype == torch.uint8 and batch["labels"].shape == (2, 1024, 1024)
    per_sample = sum(t.numel() * t.element_size() for t in batch.values()) / 2
    assert per_sample <= 4.2e6, per_sample


def test_wide_label_sets_cross_as_int16(tmp_path):
    labels = LabelSpec({i: str(i) for i in range(300)}, ignore_index=-100)
    assert labels.mask_dtype == torch.int16
    assert LabelSpec({0: "a"}, ignore_index=255).mask_dtype == torch.uint8
    assert LabelSpec({0: "a"}, ignore_index=-1).mask_dtype == torch.int16
    assert LabelSpec({i: str(i) for i in range(40_000)}, ignore_index=-1).mask_dtype == torch.int32


def test_padding_is_zero_and_ignored_after_preprocessing(folder):
    # 24x32 scenes fit inside scale (64, 32) at ratio 1: 32x43, padded to the 48x48 crop
    data = folder_data(folder, "augment.crop_size=[48,48]", "augment.ratio_range=[1,1]")
    item = data.train[3]
    assert item["valid_size"].tolist() == [32, 43]
    assert (item["labels"][32:] == 255).all() and (item["labels"][:, 43:] == 255).all()
    assert (item["labels"][:32, :43] != 255).all()
    assert (item["image"][:, 32:] == 0).all() and (item["image"][:, :, 43:] == 0).all()
    pixel_values, labels = data.preprocess(train_collate([item]))
    assert pixel_values.dtype == torch.float32 and labels.dtype == torch.int64
    assert (pixel_values[0, :, 32:] == 0).all() and (pixel_values[0, :, :, 43:] == 0).all()  # the mean colour
    assert (pixel_values[0, :, :32, :43] != 0).any()


def test_preprocessing_normalises_like_the_image_processor(folder):
    data = folder_data(folder, "augment.photometric=false")
    batch = train_collate([data.train[k] for k in range(4)])
    pixel_values, labels = data.preprocess(batch)
    expected = v2.Normalize(data.processor.image_mean, data.processor.image_std)(batch["image"].float() / 255)
    for out, reference, (height, width) in zip(pixel_values, expected, batch["valid_size"].tolist()):
        assert torch.allclose(out[:, :height, :width], reference[:, :height, :width], atol=1e-6)
    assert torch.equal(labels, batch["labels"].long())


def test_same_key_same_item_and_keys_wrap(folder):
    data = folder_data(folder)
    first, again = data.train[7], data.train[7]
    for key in first:
        assert torch.equal(first[key], again[key])
    assert not torch.equal(data.train[7]["image"], data.train[11]["image"])  # same sample, new draw
    fixed = folder_data(
        folder,
        "augment.ratio_range=[1,1]",
        "augment.flip_prob=0",
        "augment.photometric=false",
        "augment.crop_size=[32,43]",
    )
    assert torch.equal(fixed.train[1]["image"], fixed.train[1 + 4 * 3]["image"])  # key % len


def test_seed_changes_the_draws_and_global_rng_is_untouched(folder):
    state = torch.get_rng_state()
    a = folder_data(folder, "train.seed=0").train[2]
    b = folder_data(folder, "train.seed=1").train[2]
    assert not (torch.equal(a["image"], b["image"]) and torch.equal(a["photometric"], b["photometric"]))
    assert torch.equal(torch.get_rng_state(), state)


def test_items_do_not_depend_on_workers(folder):
    data = folder_data(folder)
    keys = [5, 0, 17, 2, 9, 30, 3, 12]

    def batches(workers):
        loader = make_loader(data.train, batch_size=4, num_workers=workers, sampler=keys)
        return list(loader)

    serial, parallel = batches(0), batches(2)
    for a, b in zip(serial, parallel):
        assert a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)


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
        "augment.flip_prob=0.5",
        "augment.cat_max_ratio=1",
    )
    for key in range(12):
        item = data.train[key]
        labelled = item["labels"] != 255
        assert torch.equal(item["image"][0][labelled], item["labels"][labelled] * 100)


@pytest.mark.parametrize(("ratio", "expected"), [(0.5, (50, 100)), (1.0, (100, 200)), (2.0, (200, 400))])
def test_random_resize_fits_the_scaled_target_keeping_ratio(ratio, expected):
    step = RandomRescaleCrop(
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
    square = RandomRescaleCrop((200, 50), (1.0, 1.0), (1000, 1000), 1.0, LabelSpec({0: "a"}).class_pixels)
    assert square(tv_tensors.Image(torch.zeros(3, 100, 100, dtype=torch.uint8))).shape[-2:] == (50, 50)


def test_cat_max_ratio_redraws_dominated_crops():
    mask = torch.zeros(64, 64, dtype=torch.uint8)
    mask[:16, :16] = torch.arange(2).repeat(16, 8)  # only the top-left corner holds two classes
    labels = LabelSpec({0: "a", 1: "b"})

    def balanced_share(cat_max_ratio):
        step = RandomRescaleCrop((64, 64), (1.0, 1.0), (16, 16), cat_max_ratio, labels.class_pixels)
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


def _reference_distortion(image: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """mmseg's PhotoMetricDistortion for one (3, H, W) image in [0, 1], step by step with torchvision."""
    brightness, contrast_first, contrast, saturation, hue = params.tolist()
    image = (image + brightness).clamp(0, 1)
    if contrast_first:
        image = (image * contrast).clamp(0, 1)
    image = F.adjust_saturation(image, saturation)
    if hue:
        image = rotate_hue(image[None], torch.tensor([hue]))[0]
    if not contrast_first:
        image = (image * contrast).clamp(0, 1)
    return image


def test_batched_photometric_distortion_equals_the_per_image_steps():
    torch.manual_seed(0)
    augment = recipe().augment
    params = torch.stack([draw_photometric(augment) for _ in range(16)])
    images = torch.rand(16, 3, 8, 8)
    batched = photometric_distortion(images.clone(), params)
    for image, row, out in zip(images, params, batched):
        assert torch.allclose(out, _reference_distortion(image, row), atol=1e-6)
    assert batched.min() >= 0 and batched.max() <= 1
    assert (params[:, 0] == 0).any() and (params[:, 0] != 0).any()  # each step taken or not, by its coin


def test_identity_parameters_leave_the_image_unchanged():
    identity = torch.tensor([0.0, 1.0, 1.0, 1.0, 0.0])  # the values of the steps whose coin said no
    images = torch.rand(2, 3, 8, 8)
    assert torch.equal(photometric_distortion(images.clone(), identity.expand(2, -1)), images)


def test_photometric_off_is_decided_once_by_the_worker(folder):
    """Without photometric parameters in the batch, the preprocessor only normalises (no distortion pass)."""
    data = folder_data(folder, "augment.photometric=false")
    assert "photometric" not in data.train[0] and "photometric" in folder_data(folder).train[0]


@pytest.mark.parametrize("seed", range(8))
def test_photometric_draws_follow_mmsegs_order(seed):
    """mmseg draws: brightness coin and delta, contrast mode, contrast coin and factor, saturation, hue."""
    augment = recipe().augment
    torch.manual_seed(seed)
    drawn = draw_photometric(augment).tolist()
    torch.manual_seed(seed)

    def coin():
        return bool(torch.rand(()) < 0.5)

    def uniform(low, high):
        return float(torch.empty(()).uniform_(low, high))

    brightness = uniform(-augment.brightness, augment.brightness) if coin() else 0.0
    contrast_first = float(coin())
    contrast = uniform(*augment.contrast) if coin() else 1.0
    saturation = uniform(*augment.saturation) if coin() else 1.0
    hue = uniform(-augment.hue, augment.hue) if coin() else 0.0
    assert drawn == pytest.approx([brightness, contrast_first, contrast, saturation, hue])


def test_rotate_hue_keeps_grey_and_turns_red_towards_yellow():
    grey = torch.full((1, 3, 2, 2), 0.4)
    assert torch.allclose(rotate_hue(grey.clone(), torch.tensor([0.1])), grey, atol=1e-6)
    colour = torch.rand(1, 3, 4, 4)
    assert torch.allclose(rotate_hue(colour.clone(), torch.tensor([0.0])), colour, atol=1e-6)
    red = torch.tensor([0.8, 0.2, 0.2])[None, :, None, None]
    turned = rotate_hue(red.clone(), torch.tensor([0.08])).flatten()
    assert turned[1] > 0.2 and turned[2] < 0.2  # green up, blue down: towards yellow, as an HSV hue shift


def test_a_bad_file_read_in_a_worker_is_one_line_naming_it(folder):
    data = folder_data(folder)
    broken = sorted((folder / "train" / "images").iterdir())[1]
    broken.write_bytes(b"not a png")
    loader = make_loader(data.train, batch_size=2, num_workers=1, sampler=[0, 1])
    with pytest.raises(DatasetError) as caught:
        data.preprocess(next(iter(loader)))
    message = str(caught.value)
    assert broken.name in message and "\n" not in message and "Caught" not in message and "Traceback" not in message


def test_eval_item_keeps_native_labels(folder):
    data = folder_data(folder, "eval.resize=[64,48]")
    item = data.eval[0]
    assert item["pixel_values"].shape == (3, 48, 64)  # short side 48, ratio kept
    assert item["labels"].shape == (24, 32) and item["labels"].dtype == torch.uint8
    assert item["image"].shape == (3, 24, 32) and item["image"].dtype == torch.uint8


def test_collation_and_loaders(folder):
    data = folder_data(folder)
    batch = train_collate([data.train[0], data.train[1]])
    assert batch["image"].shape == (2, 3, 32, 32) and batch["labels"].shape == (2, 32, 32)
    assert batch["photometric"].shape == (2, 5) and batch["valid_size"].shape == (2, 2)
    same = eval_collate([data.eval[0], data.eval[1], None])
    assert same["labels"].shape == (2, 24, 32) and same.keys() == {"pixel_values", "labels"}
    small = dict(data.eval[2], labels=torch.zeros(5, 5, dtype=torch.long))
    mixed = eval_collate([data.eval[0], small])
    assert isinstance(mixed["labels"], list) and [t.shape for t in mixed["labels"]] == [(24, 32), (5, 5)]
    assert isinstance(mixed["pixel_values"], torch.Tensor)
    assert eval_collate([None])["labels"] == []
    loader = make_loader(data.eval, batch_size=2, num_workers=0)
    assert loader.collate_fn is eval_collate and not loader.pin_memory
    assert make_loader(data.train, 2, num_workers=1).persistent_workers


LEFT_OPEN = """
import os, signal, sys
import torch
from segtune.data import make_loader

class Numbers(torch.utils.data.Dataset):
    def __len__(self):
        return 4
    def __getitem__(self, index):
        return {"labels": torch.full((2,), index)}

loader = make_loader(Numbers(), batch_size=2, num_workers=2)
kept = iter(loader)  # open at exit, as one in a kept traceback would be
next(kept)
workers = [w.pid for w in kept._workers]
print(*workers, flush=True)
if sys.argv[1] == "sigterm":  # a scheduler's SIGTERM reaching the workers: status 0, so no error in this process
    for pid in workers:
        os.kill(pid, signal.SIGTERM)
    for worker in kept._workers:
        worker.join(timeout=60)  # on a loaded machine a worker may take a while to be scheduled
    print(sorted(w.exitcode for w in kept._workers), flush=True)
"""


@pytest.mark.parametrize("how", ["exit", "sigterm"])
def test_a_process_with_loader_workers_still_running_exits(tmp_path, how):
    """multiprocessing ends daemonic children with SIGTERM at exit and waits: workers must not outlive it."""
    script = tmp_path / "left_open.py"
    script.write_text(LEFT_OPEN)
    done = subprocess.run([sys.executable, str(script), how], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert len(lines[0].split()) == 2
    if how == "sigterm":
        assert lines[1] == "[0, 0]" and "Traceback" not in done.stderr
