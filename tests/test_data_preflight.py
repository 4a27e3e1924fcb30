"""The pre-flight check (`data.check`) in build_datasets, and the check command it shares its per-sample code with."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from segtune.data import build_datasets, check_dataset, preflight
from segtune.errors import DatasetError
from tests.data_fixtures import (
    folder_recipe,
    isolated_datasets_cache,  # noqa: F401 (autouse fixture)
    make_folder,
    png_bytes,
    recipe,
    save,
    scene,
)


def wrong_size_folder(root):
    make_folder(root, "split", count=3)
    save(root / "train" / "masks" / "img_2.png", np.zeros((10, 12), np.uint8))
    return root


def corrupt_pixels(path):
    """Keep a PNG's signature and IHDR (the header: size, mode), replace the pixel stream with garbage."""
    data = path.read_bytes()
    path.write_bytes(data[:33] + b"\x00\x00\x00\x10IDAT" + b"not zlib data..." + b"\x00" * 4)


def test_wrong_size_mask_stops_build_datasets_naming_the_file(tmp_path):
    root = wrong_size_folder(tmp_path)
    with pytest.raises(DatasetError) as error:
        build_datasets(folder_recipe(root))
    lines = str(error.value).splitlines()
    assert lines[0] == f"{root}: data.check=quick found 1 problem(s) in 6 samples:"
    assert lines[1].startswith("  train sample 2: image (") and lines[1].endswith("img_2.png') is 10x12")
    assert "train/masks/img_2.png" in lines[1] and "is 24x32 (HxW) but mask" in lines[1]
    assert "data.skip_invalid=true" in lines[2] and "data.check=off" in lines[2]


def test_wrong_size_mask_stops_training_before_the_first_step(tmp_path):
    from segtune.train import train

    root = wrong_size_folder(tmp_path / "data")
    out = tmp_path / "run"
    overrides = ["model.init=random", "train.max_steps=2", "data.num_workers=0", "logging.report_to=[none]"]
    with pytest.raises(DatasetError, match=r"train sample 2: image .* is 24x32 \(HxW\) but mask"):
        train(folder_recipe(root, *overrides, f"train.output_dir={out}"))
    assert not (out / "checkpoints").exists()


def test_check_off_builds_and_the_error_comes_when_read(tmp_path):
    data = build_datasets(folder_recipe(wrong_size_folder(tmp_path), "data.check=off"))
    with pytest.raises(DatasetError, match=r"train sample 2: .* is 10x12"):
        data.train[2]


def test_skip_invalid_warns_and_skips_as_when_read(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="segtune.data.preflight"):
        data = build_datasets(folder_recipe(wrong_size_folder(tmp_path), "data.skip_invalid=true"))
    assert "data.check=quick found 1 problem(s) in 6 samples" in caplog.text and "skipped when read" in caplog.text
    assert data.skipped.count == 0  # counted once, when read, as before
    assert data.train[2]["image"].shape == (3, 32, 32)  # replaced by the next valid sample
    assert data.skipped.count == 1


def test_quick_decodes_the_masks_of_a_small_split_and_no_image(tmp_path, monkeypatch):
    # quick decoded no pixel before issue 14; it now decodes every mask of a split of up to 500 (a sample of a
    # larger one: tests/test_data_diagnosis.py), and still reads images from their header only
    make_folder(tmp_path, "split", count=2)
    corrupt_pixels(tmp_path / "val" / "masks" / "img_1.png")
    for level in ("quick", "full"):
        with pytest.raises(
            DatasetError, match=r"validation sample 1: mask \('.*val/masks/img_1.png'\): not a readable"
        ):
            build_datasets(folder_recipe(tmp_path, f"data.check={level}"))

    def no_decoding(*args):
        raise AssertionError("quick decoded an image")

    monkeypatch.setattr(preflight, "read_image", no_decoding)
    (tmp_path / "val" / "masks" / "img_1.png").write_bytes(png_bytes(scene(1)[1]))
    build_datasets(folder_recipe(tmp_path))


def test_quick_and_full_catch_a_bad_mask_value_in_a_small_split(tmp_path):
    make_folder(tmp_path, "split", count=2)
    mask = scene(100)[1].copy()
    mask[3, 4] = 7
    save(tmp_path / "val" / "masks" / "img_0.png", mask)
    for level in ("quick", "full"):
        with pytest.raises(
            DatasetError, match=r"1 problem\(s\) in 4 samples:\n  validation sample 0: mask .* \[7\] are"
        ):
            build_datasets(folder_recipe(tmp_path, f"data.check={level}"))


def test_many_problems_are_counted_and_ten_listed(tmp_path):
    make_folder(tmp_path, "split", count=12)
    for i in range(12):
        save(tmp_path / "train" / "masks" / f"img_{i}.png", np.zeros((5, 5), np.uint8))
    with pytest.raises(DatasetError) as error:
        build_datasets(folder_recipe(tmp_path))
    message = str(error.value)
    assert "12 problem(s) in 24 samples" in message and "\n  ... and 2 more\n" in message
    assert message.count("  train sample ") == 10


def test_check_runs_after_the_sample_limits(tmp_path):
    make_folder(tmp_path, "split", count=3)
    data = build_datasets(folder_recipe(tmp_path, "data.max_train_samples=1"))
    [kept] = [row["image"]["path"] for row in data.train.samples.with_format(None)]
    for other in {"img_0.png", "img_1.png", "img_2.png"} - {kept.rsplit("/", 1)[-1]}:
        save(tmp_path / "train" / "masks" / other, np.zeros((10, 12), np.uint8))  # left out by the limit
    build_datasets(folder_recipe(tmp_path, "data.max_train_samples=1"))
    with pytest.raises(DatasetError, match=r"2 problem\(s\) in 6 samples"):
        build_datasets(folder_recipe(tmp_path))


def test_synthetic_scenes_are_checked_from_their_stored_pngs():
    r = recipe("data.synthetic.num_train=4", "data.synthetic.num_eval=2", "data.synthetic.image_size=32")
    problems = [p for name in ("train", "validation") for p in _problems(r, name)]
    assert problems == []


def _problems(r, split):
    from segtune.data import load_source
    from segtune.data.build import label_spec

    source = load_source(r)
    labels = label_spec(r.data, source)
    return [p for _, p in preflight.scan(source.splits[split], split, labels, "full") if p]


def test_check_command_ends_each_split_with_its_count():
    r = recipe(
        "data.synthetic.num_train=501",
        "data.synthetic.num_eval=3",
        "data.synthetic.image_size=16",
        "data.synthetic.num_classes=3",
    )
    lines = []
    report = check_dataset(r, progress=lines.append)
    assert report.ok and report.samples == {"train": 501, "validation": 3}
    assert lines == [
        "train: 500/501 samples checked",
        "train: 501/501 samples checked",
        "validation: 3/3 samples checked",
    ]
