"""Every source yields lazily decoded image/label Image columns, names, a palette, and the right pixels."""

from __future__ import annotations

import json

import datasets
import numpy as np
import pytest
import torch

from segtune.data import build_datasets, load_source
from segtune.data.sources.base import undecoded
from segtune.data.sources.synthetic import COLOUR_SIGMA, class_names, make_scene
from tests.data_fixtures import (
    CITYSCAPES_IDS,
    hub_dataset,
    isolated_datasets_cache,  # noqa: F401 (autouse fixture)
    make_cityscapes,
    make_folder,
    make_mixed_folder,
    palette_png,
    recipe,
    save,
    scene,
    write_parquet,
)


def assert_image_columns(splits: datasets.DatasetDict, names=("train", "validation")) -> None:
    for name in names:
        assert isinstance(splits[name].features["image"], datasets.Image)
        assert isinstance(splits[name].features["label"], datasets.Image)


@pytest.mark.parametrize("layout", ["split", "nested", "flat"])
def test_folder_layouts(tmp_path, layout):
    make_folder(tmp_path, layout, count=4)
    extra = ["data.val_ratio=0.25"] if layout == "flat" else []
    r = recipe("data.source=folder", f"data.path={tmp_path}", "data.num_labels=3", *extra)
    data = build_datasets(r)
    assert_image_columns(load_source(r).splits)
    assert (len(data.train), len(data.eval)) == ((3, 1) if layout == "flat" else (4, 4))
    assert data.labels.id2label == {0: "class_0", 1: "class_1", 2: "class_2"}


def test_flat_split_is_seeded(tmp_path):
    make_folder(tmp_path, "flat", count=8)

    def eval_files(seed):
        source = load_source(
            recipe(
                "data.source=folder",
                f"data.path={tmp_path}",
                "data.num_labels=3",
                "data.val_ratio=0.25",
                f"train.seed={seed}",
            )
        )
        return [
            row["path"]
            for row in source.splits["validation"].cast_column("image", datasets.Image(decode=False))["image"]
        ]

    assert eval_files(0) == eval_files(0)
    assert len(eval_files(0)) == 2
    assert any(eval_files(0) != eval_files(s) for s in (1, 2, 3))


def test_folder_reads_every_image_and_mask_kind(tmp_path):
    expected = make_mixed_folder(tmp_path)
    (tmp_path / "id2label.json").write_text(json.dumps({"0": "sky", "1": "road", "2": "car"}))
    r = recipe("data.source=folder", f"data.path={tmp_path}")
    data = build_datasets(r)
    assert data.labels.id2label == {0: "sky", 1: "road", 2: "car"}
    stored = data.eval.samples  # the eval side keeps native resolution
    names = {}
    for i, path in enumerate(undecoded(load_source(r).splits["train"])["image"]):
        names[path["path"].rsplit("/", 1)[-1].rsplit(".", 1)[0]] = i
    train = data.train.samples
    for name, (rgb, mask) in expected.items():
        sample = train[names[name]]
        image = sample["image"].permute(1, 2, 0).numpy()
        assert sample["image"].dtype == torch.uint8 and sample["image"].shape == (3, *mask.shape)
        if name == "jpeg":
            assert np.abs(image.astype(int) - rgb).mean() < 8  # lossy, but the same picture
        else:
            assert np.array_equal(image, rgb), name
        assert sample["label"].numpy().tolist() == mask.tolist(), name  # palette INDEX = class
    assert len(stored) == 1


def test_palette_masks_give_the_class_colours(tmp_path):
    image, mask = scene(0)
    for split in ("train", "val"):
        save(tmp_path / split / "images" / "a.png", image)
        palette_png(tmp_path / split / "masks" / "a.png", mask)
    data = build_datasets(recipe("data.source=folder", f"data.path={tmp_path}", "data.num_labels=3"))
    assert data.labels.palette == ((0, 0, 0), (255, 0, 0), (0, 255, 0))
    assert data.eval[0]["labels"].tolist() == mask.tolist()  # indices, not colours


@pytest.mark.parametrize("train_ids", [False, True])
def test_cityscapes_maps_label_ids_to_train_ids(tmp_path, train_ids):
    make_cityscapes(tmp_path, train_ids=train_ids)
    r = recipe("data.source=cityscapes", f"data.path={tmp_path}")
    data, source = build_datasets(r), load_source(r)
    assert data.labels.num_labels == 19
    assert data.labels.id2label[0] == "road" and data.labels.id2label[18] == "bicycle"
    assert data.labels.palette[0] == (128, 64, 128)
    assert (source.label_map is None) == train_ids  # train-id files are read when present
    raw_paths = undecoded(source.splits["validation"])["label"]
    assert all(("labelTrainIds" in p["path"]) == train_ids for p in raw_paths)
    item = data.eval[0]
    assert item["labels"].shape == (64, 128) and item["image"].shape == (3, 64, 128)
    label_ids = np.asarray(
        datasets.Image().decode_example(
            {"path": raw_paths[0]["path"].replace("labelTrainIds", "labelIds"), "bytes": None}
        )
    )
    expected = np.vectorize(CITYSCAPES_IDS.get)(label_ids)
    assert item["labels"].tolist() == expected.tolist()


def test_parquet_and_save_to_disk_take_the_same_path(tmp_path):
    dataset = hub_dataset(label_column="annotation")
    write_parquet(dataset, tmp_path / "pq", id2label={0: "a", 1: "b", 2: "c"})
    dataset.save_to_disk(str(tmp_path / "disk"))
    parquet_recipe = recipe("data.source=hub", f"data.path={tmp_path / 'pq'}")
    disk_recipe = recipe(
        "data.source=hub",
        f"data.path={tmp_path / 'disk'}",
        "data.label_column=annotation",
        "data.id2label={0: a, 1: b, 2: c}",
    )
    from_parquet, from_disk = build_datasets(parquet_recipe), build_datasets(disk_recipe)
    for r, data in ((parquet_recipe, from_parquet), (disk_recipe, from_disk)):
        splits = load_source(r).splits
        assert_image_columns(splits)
        assert splits["train"].column_names == ["image", "label"]
        assert data.labels.id2label == {0: "a", 1: "b", 2: "c"}
    for a, b in zip(from_parquet.eval[0].values(), from_disk.eval[0].values()):
        assert torch.equal(a, b)


def test_hub_columns_by_name_and_split_from_train(tmp_path):
    dataset = hub_dataset()
    dataset = datasets.DatasetDict(train=dataset["train"].rename_columns({"image": "pixels", "label": "mask_png"}))
    dataset.save_to_disk(str(tmp_path / "d"))
    data = build_datasets(
        recipe(
            "data.source=hub",
            f"data.path={tmp_path / 'd'}",
            "data.image_column=pixels",
            "data.label_column=mask_png",
            "data.num_labels=3",
            "data.val_ratio=0.34",
        )
    )
    assert (len(data.train), len(data.eval)) == (2, 1)


def test_max_samples_take_a_seeded_subset(tmp_path):
    make_folder(tmp_path, "split", count=6)
    data = build_datasets(
        recipe(
            "data.source=folder",
            f"data.path={tmp_path}",
            "data.num_labels=3",
            "data.max_train_samples=4",
            "data.max_eval_samples=2",
        )
    )
    assert (len(data.train), len(data.eval)) == (4, 2)


def test_synthetic_is_deterministic_and_described():
    r = recipe(
        "data.synthetic.num_train=6",
        "data.synthetic.num_eval=2",
        "data.synthetic.image_size=32",
        "data.synthetic.num_classes=6",
    )
    first, second = build_datasets(r), build_datasets(r)
    assert_image_columns(load_source(r).splits)
    names = {0: "background", 1: "disc", 2: "bar", 3: "rectangle", 4: "ring", 5: "triangle"}
    assert first.labels.id2label == class_names(6) == names
    for a, b in zip(first.eval[1].values(), second.eval[1].values()):
        assert torch.equal(a, b)
    assert first.eval[0]["image"].shape == (3, 32, 32)
    assert not torch.equal(first.eval[0]["image"], first.eval[1]["image"])


def test_synthetic_colours_overlap_between_classes():
    """Every class shares colours with the background and with its hue neighbours (16^3 RGB bins)."""
    histograms = np.zeros((6, 4096))
    for i in range(80):
        image, mask = make_scene(np.random.default_rng([0, 0, i]), 64, 6)
        bins = (image[..., 0] // 16).astype(np.int64) * 256 + (image[..., 1] // 16) * 16 + image[..., 2] // 16
        np.add.at(histograms, (mask.ravel(), bins.ravel()), 1)
    shares = histograms / histograms.sum(1, keepdims=True)

    def overlap(a, b):
        return np.minimum(shares[a], shares[b]).sum()

    for k in range(1, 6):
        assert overlap(k, 0) > 0.05, k
        assert overlap(k, k % 5 + 1) > 0.03, k  # the next hue round the circle
    assert COLOUR_SIGMA == pytest.approx(0.18)


def test_synthetic_colour_lookup_scores_far_below_the_demo_target():
    """The best per-pixel colour -> class table (16^3 RGB bins) fitted on some scenes, scored on others."""

    def bins(image):
        return (image[..., 0] // 16).astype(np.int64) * 256 + (image[..., 1] // 16) * 16 + image[..., 2] // 16

    table = np.zeros((4096, 6), np.int64)
    for i in range(120):
        image, mask = make_scene(np.random.default_rng([0, 0, i]), 64, 6)
        np.add.at(table, (bins(image).ravel(), mask.ravel()), 1)
    confusion = np.zeros((6, 6), np.int64)
    for i in range(40):
        image, mask = make_scene(np.random.default_rng([0, 1, i]), 64, 6)
        np.add.at(confusion, (mask.ravel(), table.argmax(1)[bins(image).ravel()]), 1)
    iou = np.diag(confusion) / (confusion.sum(0) + confusion.sum(1) - np.diag(confusion))
    assert iou.mean() < 0.6  # measured 0.48 at 128 px; B0 reaches 0.80 by learning shapes


def test_synthetic_scenes_hold_several_classes_with_occlusion():
    image, mask = make_scene(np.random.default_rng([0, 0, 3]), 128, 6)
    assert image.shape == (128, 128, 3) and image.dtype == np.uint8
    assert len(np.unique(mask)) >= 3 and (mask == 0).mean() > 0.3
