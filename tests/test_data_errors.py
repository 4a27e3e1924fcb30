"""Bad input: one DatasetError naming the file or column and what is wrong; skip_invalid; the check command."""

from __future__ import annotations

import subprocess
import sys

import datasets
import numpy as np
import pytest
import torch

from segtune.commands import main
from segtune.data import build_datasets, check_dataset, make_loader
from segtune.errors import MAX_LISTED, DatasetError, joined
from tests.data_fixtures import (
    folder_recipe,
    hub_dataset,
    isolated_datasets_cache,  # noqa: F401 (autouse fixture)
    make_cityscapes,
    make_folder,
    recipe,
    save,
    scene,
)


def test_missing_folder(tmp_path):
    with pytest.raises(DatasetError, match=r"data\.path '.*nowhere': folder not found"):
        build_datasets(folder_recipe(tmp_path / "nowhere"))


def test_unrecognised_layout_explains_the_layouts(tmp_path):
    (tmp_path / "pictures").mkdir()
    with pytest.raises(DatasetError, match="no images/ folder found; expected train/images"):
        build_datasets(folder_recipe(tmp_path))


def test_empty_split(tmp_path):
    make_folder(tmp_path, "split")
    for path in (tmp_path / "val").rglob("*.png"):
        path.unlink()
    with pytest.raises(DatasetError, match=r"split 'validation' is empty"):
        build_datasets(folder_recipe(tmp_path))


def test_image_without_mask_and_mask_without_image(tmp_path):
    make_folder(tmp_path, "split")
    (tmp_path / "train" / "masks" / "img_1.png").unlink()
    save(tmp_path / "val" / "masks" / "orphan.png", scene(0)[1])
    with pytest.raises(DatasetError) as error:
        build_datasets(folder_recipe(tmp_path))
    message = str(error.value)
    assert "image 'train/images/img_1.png' has no mask named img_1.* in 'train/masks'" in message
    assert "mask 'val/masks/orphan.png' has no image named orphan.* in 'val/images'" in message


def test_lossy_mask_and_duplicate_names(tmp_path):
    make_folder(tmp_path, "split")
    (tmp_path / "train" / "masks" / "img_0.png").unlink()
    save(tmp_path / "train" / "masks" / "img_0.jpg", scene(0)[1])
    save(tmp_path / "val" / "images" / "img_0.jpg", scene(0)[0])
    with pytest.raises(DatasetError) as error:
        build_datasets(folder_recipe(tmp_path))
    assert "mask 'train/masks/img_0.jpg' is lossy (.jpg)" in str(error.value)
    assert "images 'val/images/img_0.jpg', 'val/images/img_0.png' share one name" in str(error.value)


def test_files_that_cannot_be_read_are_named_when_read(tmp_path):
    """Read-time errors, with the pre-flight check (which stops earlier) off."""
    make_folder(tmp_path, "split")
    save(tmp_path / "train" / "masks" / "img_2.png", np.zeros((10, 12), np.uint8))
    image = tmp_path / "train" / "images" / "img_0.png"
    image.write_bytes(image.read_bytes()[:300])  # a valid header, then nothing
    (tmp_path / "val" / "masks" / "img_1.png").write_bytes(b"garbage")
    data = build_datasets(folder_recipe(tmp_path, "data.check=off"))
    expected = {
        (
            data.train,
            2,
        ): r"train sample 2: image \('.*img_2.png'\) is 24x32 \(HxW\) but mask \('.*img_2.png'\) is 10x12",
        (data.train, 0): r"train sample 0: image \('.*train/images/img_0.png'\): not a readable image \(OSError: "
        r"image file is truncated",
        (data.eval, 1): r"validation sample 1: mask \('.*val/masks/img_1.png'\): not a readable mask image \(not an "
        r"image PIL can identify",
    }
    for (dataset, index), message in expected.items():
        with pytest.raises(DatasetError, match=message):
            dataset[index]


def test_mask_values_out_of_range_are_listed(tmp_path):
    make_folder(tmp_path, "split")
    mask = scene(0)[1].copy()
    mask[0, :3] = [7, 9, 200]
    save(tmp_path / "val" / "masks" / "img_0.png", mask)
    data = build_datasets(folder_recipe(tmp_path, "data.check=off"))  # the quick check now stops first, as here
    with pytest.raises(
        DatasetError, match=r"img_0.png'\): mask values \[7, 9, 200\] are outside \[0, 3\) and not the ignore index 255"
    ):
        data.eval[0]


def test_colour_mask_is_refused(tmp_path):
    make_folder(tmp_path, "split")
    save(tmp_path / "val" / "masks" / "img_0.png", scene(3)[0])
    with pytest.raises(DatasetError, match=r"mask is a colour image \(mode RGB\) with differing channels"):
        build_datasets(folder_recipe(tmp_path, "data.check=off")).eval[0]  # quick stops first (test_data_diagnosis)


def test_no_class_names(tmp_path):
    make_folder(tmp_path, "split")
    with pytest.raises(DatasetError, match="no class names found .*set data.id2label, or data.num_labels"):
        build_datasets(recipe("data.source=folder", f"data.path={tmp_path}"))


def test_label_column_that_is_not_an_image(tmp_path):
    hub_dataset(label_feature=datasets.Value("int64")).save_to_disk(str(tmp_path / "d"))
    with pytest.raises(
        DatasetError, match=r"label column 'label' has feature type Value\('int64'\); expected an Image feature"
    ):
        build_datasets(recipe("data.source=hub", f"data.path={tmp_path / 'd'}", "data.num_labels=3"))


def test_missing_column_and_split(tmp_path):
    hub_dataset().save_to_disk(str(tmp_path / "d"))
    with pytest.raises(
        DatasetError, match=r"data.label_column 'segmentation': no such column .* it has \['image', 'label', 'scene'\]"
    ):
        build_datasets(
            recipe(
                "data.source=hub", f"data.path={tmp_path / 'd'}", "data.num_labels=3", "data.label_column=segmentation"
            )
        )
    with pytest.raises(
        DatasetError, match=r"data.eval_split 'test': no such split .* it has \['train', 'validation'\]"
    ):
        build_datasets(
            recipe("data.source=hub", f"data.path={tmp_path / 'd'}", "data.num_labels=3", "data.eval_split=test")
        )


def test_unloadable_hub_path(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match=r"data.path '.*empty': cannot load the dataset"):
        build_datasets(recipe("data.source=hub", f"data.path={tmp_path / 'empty'}", "data.num_labels=3"))


def test_cityscapes_problems_name_the_files(tmp_path):
    make_cityscapes(tmp_path)
    (tmp_path / "gtFine" / "train" / "aachen" / "aachen_000000_000019_gtFine_labelIds.png").unlink()
    with pytest.raises(
        DatasetError,
        match=r"image 'leftImg8bit/train/aachen/aachen_000000_000019_leftImg8bit.png' has no mask 'gtFine/train/aachen/aachen_000000_000019_gtFine_labelIds.png'",
    ):
        build_datasets(recipe("data.source=cityscapes", f"data.path={tmp_path}"))
    with pytest.raises(DatasetError, match="Cityscapes folder .*leftImg8bit/leftImg8bit' not found"):
        build_datasets(recipe("data.source=cityscapes", f"data.path={tmp_path / 'leftImg8bit'}"))


def broken_folder(root):
    """A folder with one unpaired image, one corrupt train image and one eval mask with a bad value."""
    make_folder(root, "split", count=4)
    save(root / "train" / "images" / "lonely.png", scene(9)[0])
    (root / "train" / "images" / "img_1.png").write_bytes(b"broken")
    mask = scene(100)[1].copy()
    mask[0, 0] = 42
    save(root / "val" / "masks" / "img_0.png", mask)
    return root


def test_skip_invalid_skips_and_counts(tmp_path):
    data = build_datasets(folder_recipe(broken_folder(tmp_path), "data.skip_invalid=true"))
    assert data.skipped.count == 1  # the unpaired image, dropped while listing
    item = data.train[1]  # corrupt: replaced by the next valid sample, augmented with key 1's draw
    assert item["image"].shape == (3, 32, 32)
    assert data.eval[0] is None
    assert data.skipped.count == 3
    assert data.skipped.summary() == "skipped 3 invalid samples (listing: 1, train: 1, validation: 1)"
    data.train[1], data.train[5]  # counted once per sample, however often it comes back
    assert data.skipped.count == 3


def test_skip_counts_reach_the_main_process_from_workers(tmp_path):
    data = build_datasets(folder_recipe(broken_folder(tmp_path), "data.skip_invalid=true"))
    batches = list(make_loader(data.eval, batch_size=2, num_workers=2))
    assert sum(len(b["labels"]) for b in batches) == 3
    assert data.skipped.count == 2  # listing + the eval mask, found inside a worker process


def test_check_reports_histogram_and_every_problem(tmp_path, capsys):
    root = broken_folder(tmp_path)
    report = check_dataset(folder_recipe(root))
    assert not report.ok and len(report.problems) == 3
    text = "\n".join(report.problems)
    assert "lonely.png' has no mask" in text and "img_1.png'): not a readable image" in text and "[42]" in text
    assert report.histograms["train"][:3].sum() == 3 * 24 * 32  # three readable train samples
    exit_code = main(["data", "check", "--set", "data.source=folder", f"data.path={root}", "data.num_labels=3"])
    out = capsys.readouterr().out
    assert exit_code == 1
    assert "class_0" in out and "3 problem(s) found" in out and "(ignored: 255)" in out


def test_check_refuses_a_bad_recipe(tmp_path, capsys):
    assert main(["data", "check", "--set", "data.nope=1"]) == 1
    assert "unknown key 'data.nope'" in capsys.readouterr().err


@pytest.mark.slow  # a fresh interpreter imports torch and transformers (~5 s)
def test_check_passes_a_clean_dataset_from_the_command_line(tmp_path):
    make_cityscapes(tmp_path)
    recipe_file = tmp_path / "city.yaml"
    recipe_file.write_text(f"data:\n  source: cityscapes\n  path: {tmp_path}\n")
    result = subprocess.run(
        [sys.executable, "-m", "segtune", "data", "check", "--recipe", str(recipe_file)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "road" in result.stdout and "0 problem(s) found" in result.stdout


def test_skipped_train_sample_keeps_batches_full(tmp_path):
    data = build_datasets(folder_recipe(broken_folder(tmp_path), "data.skip_invalid=true"))
    batch = next(iter(make_loader(data.train, batch_size=3, sampler=[0, 1, 2])))
    pixel_values, _ = data.preprocess(batch)
    assert pixel_values.shape[0] == 3 and torch.isfinite(pixel_values).all()


def test_joined_lists_up_to_a_limit_then_how_many_more():
    assert joined(["a.png", "b.png"]) == "a.png, b.png"
    assert joined(list(range(25))) == ", ".join(map(str, range(MAX_LISTED))) + f" and {25 - MAX_LISTED} more"
    assert joined(["a.png", "b.png"], total=9, most=3) == "a.png, b.png and 7 more"  # 9 files, 2 named
    assert joined(["a.png", "b.png", "c.png", "d.png"], most=3) == "a.png, b.png, c.png and 1 more"
