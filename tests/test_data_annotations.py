"""data.source labelme, yolo and voc: labelling-tool exports and Pascal VOC as image/mask pairs."""

from __future__ import annotations

import json

import numpy as np
import PIL.Image
import pytest

from segtune.data.build import build_datasets
from segtune.data.sources import labelme as labelme_module
from segtune.data.sources import load_source
from segtune.data.sources import yolo as yolo_module
from segtune.data.sources.base import undecoded
from segtune.errors import DatasetError
from segtune.recipe import load_recipe
from segtune.train import train
from tests.annotation_fixtures import (
    SIZE,
    count_paints,
    image,
    labelme_file,
    labelme_shape,
    make_labelme,
    make_voc,
    make_yolo,
    tiny_run,
)
from tests.data_fixtures import isolated_datasets_cache, recipe  # noqa: F401 (fixture)


def masks_by_image(source) -> dict[str, np.ndarray]:
    """Image file name -> its mask, over every split."""
    found = {}
    for split in source.splits.values():
        for row in undecoded(split):
            found[row["image"]["path"].rsplit("/", 1)[-1]] = np.array(PIL.Image.open(row["label"]["path"]))
    return found


# --- LabelMe ------------------------------------------------------------------------------------------------


def labelme_recipe(root, *overrides: str):
    return recipe("data.source=labelme", f"data.path={root}", "data.val_ratio=0.5", *overrides)


def test_labelme_rectangles_and_polygons_become_sorted_classes(tmp_path):
    source = load_source(labelme_recipe(make_labelme(tmp_path)))
    assert source.id2label == {0: "background", 1: "car", 2: "road"}
    assert sum(len(s) for s in source.splits.values()) == 4
    mask = masks_by_image(source)["shot_0.png"]
    assert (mask[:32] == 0).all() and (mask[32:] > 0).all()
    # the triangle (car) lies over the rectangle (road), whatever the order: smaller on top
    assert mask[42, 10] == 1 and mask[34, 60] == 2
    assert (mask == 1).sum() == pytest.approx(32 * 20 / 2, rel=0.06)  # a 320-pixel triangle: edge pixels count


def test_labelme_names_from_the_recipe_and_background_labels(tmp_path):
    path = image(tmp_path / "a.png")
    labelme_file(
        path,
        [
            labelme_shape("wall", [[0, 0], [64, 32]], "rectangle"),
            labelme_shape("_background_", [[0, 0], [8, 0], [0, 8]]),
        ],
    )
    labelme_file(image(tmp_path / "b.png"), [labelme_shape("door", [[0, 0], [64, 64]], "rectangle")])
    source = load_source(labelme_recipe(tmp_path, "data.id2label={0: none, 1: door, 2: wall}"))
    masks = masks_by_image(source)
    assert source.id2label == {0: "none", 1: "door", 2: "wall"}
    assert masks["a.png"][20, 20] == 2 and masks["a.png"][1, 1] == 0 and (masks["b.png"] == 1).all()


def test_labelme_split_folders(tmp_path):
    make_labelme(tmp_path / "train", count=3)
    make_labelme(tmp_path / "val", count=2)
    source = load_source(recipe("data.source=labelme", f"data.path={tmp_path}"))
    assert len(source.splits["train"]) == 3 and len(source.splits["validation"]) == 2


@pytest.mark.parametrize(
    "shape, message",
    [
        (
            labelme_shape("car", [[0, 0], [9, 9]]),
            r"a\.json: shape 'car' \(polygon\): polygon with 2 points; a polygon needs at least 3",
        ),
        (
            labelme_shape("car", [[5, 5], [20, 5]], "circle"),
            r"a\.json: shape 'car' \(circle\): shape type 'circle' is not supported",
        ),
        (
            labelme_shape("car", [[5, 5]], "rectangle"),
            r"a\.json: shape 'car' \(rectangle\): a rectangle needs 2 corner points",
        ),
    ],
)
def test_labelme_shape_mistakes_name_the_file_and_shape(tmp_path, shape, message):
    labelme_file(image(tmp_path / "a.png"), [shape])
    with pytest.raises(DatasetError, match=message):
        load_source(labelme_recipe(tmp_path))


def test_labelme_unknown_label_and_missing_image_name_the_file(tmp_path):
    make_labelme(tmp_path)
    with pytest.raises(DatasetError, match=r"classes \['car'\] are not in data.id2label"):
        load_source(labelme_recipe(tmp_path, "data.id2label={0: background, 1: road}"))
    (tmp_path / "sub1" / "shot_3.png").unlink()
    with pytest.raises(DatasetError, match=r"sub1/shot_3\.json: image 'shot_3\.png' not found beside it"):
        load_source(labelme_recipe(tmp_path))


def test_labelme_files_that_are_not_labelme_json_are_named(tmp_path):
    make_labelme(tmp_path)
    (tmp_path / "sub1" / "shot_1.json").write_text("{not json")
    with pytest.raises(DatasetError, match=r"sub1/shot_1\.json: cannot read LabelMe JSON: Expecting property name"):
        load_source(labelme_recipe(tmp_path))
    (tmp_path / "sub1" / "shot_1.json").write_text('{"images": []}')
    with pytest.raises(
        DatasetError, match=r"sub1/shot_1\.json: not a LabelMe JSON file \(expected an object with 'shapes'"
    ):
        load_source(labelme_recipe(tmp_path))


def test_labelme_is_rasterised_once_until_a_file_changes(tmp_path, monkeypatch):
    root = make_labelme(tmp_path, count=2)
    painted = count_paints(monkeypatch, labelme_module)
    load_source(labelme_recipe(root))
    load_source(labelme_recipe(root))
    assert len(painted) == 2
    labelme_file(root / "sub0" / "shot_0.png", [labelme_shape("road", [[0, 0], [64, 64]], "rectangle")])
    assert (masks_by_image(load_source(labelme_recipe(root)))["shot_0.png"] == 2).all()
    assert len(painted) == 4


def test_a_labelme_folder_trains_end_to_end(tmp_path):
    root = make_labelme(tmp_path / "data")
    out = tmp_path / "run"
    train(load_recipe("demo.yaml", tiny_run(out, "data.source=labelme", f"data.path={root}", "data.val_ratio=0.5")))
    assert json.loads((out / "config.json").read_text())["id2label"] == {"0": "background", "1": "car", "2": "road"}
    assert json.loads((out / "metrics.json").read_text())["step"] == 2


def test_a_labelme_mistake_stops_before_the_first_step(tmp_path):
    root = make_labelme(tmp_path / "data")
    labelme_file(image(root / "bad.png"), [labelme_shape("car", [[1, 1], [5, 5], [9, 1], [3, 3]], "linestrip")])
    with pytest.raises(DatasetError, match=r"bad\.json: shape 'car' \(linestrip\): shape type 'linestrip'"):
        train(
            load_recipe(
                "demo.yaml",
                tiny_run(tmp_path / "run", "data.source=labelme", f"data.path={root}", "data.val_ratio=0.5"),
            )
        )
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_labelme_build_reads_masks(tmp_path):
    data = build_datasets(labelme_recipe(make_labelme(tmp_path)))
    assert data.labels.id2label == {0: "background", 1: "car", 2: "road"}
    assert set(data.eval[0]["labels"].unique().tolist()) == {0, 1, 2} and data.eval[0]["labels"].shape == (SIZE, SIZE)


# --- YOLO ---------------------------------------------------------------------------------------------------


def yolo_recipe(path, *overrides: str):
    return recipe("data.source=yolo", f"data.path={path}", *overrides)


@pytest.mark.parametrize("names_as_list", [False, True])
def test_yolo_classes_shift_by_one_for_background(tmp_path, names_as_list):
    config = make_yolo(tmp_path, names_as_list=names_as_list)
    source = load_source(yolo_recipe(config))
    assert source.id2label == {0: "background", 1: "cat", 2: "dog"}
    assert len(source.splits["train"]) == 3 and len(source.splits["validation"]) == 3
    masks = masks_by_image(source)
    assert (masks["train_0.png"][:32] == 1).all()
    triangle = masks["train_0.png"] == 2  # legs of 32 and 20 px from (8, 40): 320 px
    assert triangle.sum() == pytest.approx(320, rel=0.05) and triangle[41, 9] and not triangle[:40].any()
    assert (masks["val_2.png"] == 0).all()  # no label file: background


def test_yolo_folder_path_and_roboflow_relative_entries(tmp_path):
    config = make_yolo(tmp_path)
    config.write_text(config.read_text().replace("path: .\n", "").replace("images/", "../images/"))
    source = load_source(yolo_recipe(tmp_path))
    assert len(source.splits["train"]) == 3


def test_yolo_image_lists_may_name_images_outside_the_dataset_by_absolute_path(tmp_path):
    config = make_yolo(tmp_path / "data")
    outside = image(tmp_path / "elsewhere" / "images" / "extra.png", 7)
    (tmp_path / "elsewhere" / "labels").mkdir()
    (tmp_path / "elsewhere" / "labels" / "extra.txt").write_text("1 0 0 1 0 1 1 0 1\n")  # the whole image: dog
    (tmp_path / "data" / "val.txt").write_text(f"images/val/val_0.png\n{outside}\n")
    config.write_text(config.read_text().replace("val: images/val", "val: val.txt"))
    source = load_source(yolo_recipe(config))
    assert (masks_by_image(source)["extra.png"] == 2).all()


@pytest.mark.parametrize(
    "line, message",
    [
        ("0 0.1 0.1 0.5 0.5", r"train_0\.txt, line 1: polygon with 2 points; a polygon needs at least 3"),
        ("2 0 0 1 0 1 1", r"train_0\.txt, line 1: class 2 is outside names \(0\.\.1\)"),
        ("cat 0 0 1 0 1 1", r"train_0\.txt, line 1: expected `class x1 y1 x2 y2 \.\.\.` numbers"),
    ],
)
def test_yolo_label_mistakes_name_the_file_and_line(tmp_path, line, message):
    config = make_yolo(tmp_path)
    (tmp_path / "labels" / "train" / "train_0.txt").write_text(line + "\n")
    with pytest.raises(DatasetError, match=message):
        load_source(yolo_recipe(config))


def test_yolo_missing_image_and_folder_are_named(tmp_path):
    config = make_yolo(tmp_path)
    (tmp_path / "val.txt").write_text("images/val/val_0.png\nimages/val/gone.png\n")
    config.write_text(config.read_text().replace("val: images/val", "val: val.txt"))
    with pytest.raises(DatasetError, match=r"val\.txt: image 'images/val/gone\.png' listed but missing"):
        load_source(yolo_recipe(config))
    assert len(load_source(yolo_recipe(config, "data.skip_invalid=true")).splits["validation"]) == 1
    config.write_text(config.read_text().replace("val: val.txt", "val: images/nowhere"))
    with pytest.raises(DatasetError, match=r"data\.yaml: val folder 'images/nowhere' not found"):
        load_source(yolo_recipe(config))
    with pytest.raises(DatasetError, match="YOLO data.yaml not found"):
        load_source(yolo_recipe(tmp_path / "images"))


def test_yolo_is_rasterised_once_until_a_label_changes(tmp_path, monkeypatch):
    config = make_yolo(tmp_path, count=2)
    painted = count_paints(monkeypatch, yolo_module)
    load_source(yolo_recipe(config))
    load_source(yolo_recipe(config))
    assert len(painted) == 4
    (tmp_path / "labels" / "train" / "train_0.txt").write_text("1 0 0 1 0 1 1 0 1\n")
    assert (masks_by_image(load_source(yolo_recipe(config)))["train_0.png"] == 2).all()
    assert len(painted) == 8


def test_a_yolo_dataset_trains_end_to_end(tmp_path):
    config = make_yolo(tmp_path / "data")
    out = tmp_path / "run"
    train(load_recipe("demo.yaml", tiny_run(out, "data.source=yolo", f"data.path={config}")))
    assert json.loads((out / "config.json").read_text())["id2label"] == {"0": "background", "1": "cat", "2": "dog"}
    assert json.loads((out / "metrics.json").read_text())["step"] == 2


# --- Pascal VOC ---------------------------------------------------------------------------------------------


def voc_recipe(path, *overrides: str):
    return recipe("data.source=voc", f"data.path={path}", *overrides)


@pytest.mark.parametrize("where", ["", "VOCdevkit", "VOCdevkit/VOC2012"])
def test_voc_palette_indices_are_classes_and_boundaries_are_ignored(tmp_path, where):
    make_voc(tmp_path)
    data = build_datasets(voc_recipe(tmp_path / where, "data.eval_split=val", "data.check=full"))
    assert (
        data.labels.num_labels == 21 and data.labels.id2label[15] == "person" and data.labels.palette[1] == (128, 0, 0)
    )
    assert len(data.train) == 3 and len(data.eval) == 3
    labels = data.eval[1]["labels"]
    assert labels[20, 20] == 16 and labels[15, 20] == 255 and labels[0, 0] == 0


def test_voc_with_another_ignore_index_maps_the_boundary_to_it(tmp_path):
    make_voc(tmp_path)
    data = build_datasets(voc_recipe(tmp_path, "data.ignore_index=-100"))  # validation -> val.txt
    labels = data.eval[0]["labels"]
    assert labels[15, 20] == -100 and labels[20, 20] == 15


def test_voc_mistakes_are_named(tmp_path):
    with pytest.raises(DatasetError, match="Pascal VOC 2012 folder .* not found. Download http://host.robots.ox.ac.uk"):
        load_source(voc_recipe(tmp_path))
    make_voc(tmp_path)
    voc = tmp_path / "VOCdevkit" / "VOC2012"
    (voc / "JPEGImages" / "2007_val_001.jpg").unlink()
    with pytest.raises(
        DatasetError, match=r"val\.txt, line 2: '2007_val_001' lists JPEGImages/2007_val_001\.jpg, not found"
    ):
        load_source(voc_recipe(tmp_path))
    with pytest.raises(DatasetError, match=r"aug\.txt: split 'aug' has no list file; found \['train', 'val'\]"):
        load_source(voc_recipe(tmp_path, "data.train_split=aug"))


def test_the_voc_recipe_is_mmsegs_schedule_with_the_papers_optimiser():
    voc = load_recipe("voc.yaml")
    assert (voc.data.source, voc.data.path, voc.data.eval_split) == ("voc", "data/VOCdevkit/VOC2012", "val")
    assert (
        voc.augment.crop_size == (512, 512) and voc.train.max_steps == 20_000 and voc.train.reference_batch_size == 16
    )
    assert (voc.optim.lr, voc.optim.head_lr_mult, voc.optim.weight_decay) == (6e-5, 10.0, 0.01)


def test_voc_trains_end_to_end(tmp_path):
    make_voc(tmp_path / "data")
    out = tmp_path / "run"
    train(load_recipe("demo.yaml", tiny_run(out, "data.source=voc", f"data.path={tmp_path / 'data'}")))
    config = json.loads((out / "config.json").read_text())
    assert len(config["id2label"]) == 21 and config["id2label"]["20"] == "tvmonitor"
    assert json.loads((out / "metrics.json").read_text())["step"] == 2


def test_a_yolo_mistake_stops_before_the_first_step(tmp_path):
    config = make_yolo(tmp_path / "data")
    (tmp_path / "data" / "labels" / "val" / "val_1.txt").write_text("0 0 0 1 0 1 1\n5 0 0 1 0 1 1\n")
    with pytest.raises(DatasetError, match=r"val_1\.txt, line 2: class 5 is outside names"):
        train(load_recipe("demo.yaml", tiny_run(tmp_path / "run", "data.source=yolo", f"data.path={config}")))
    assert not (tmp_path / "run" / "checkpoints").exists()
