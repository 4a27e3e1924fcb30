"""data.source: coco: polygons and RLE rasterised once into the cache, CVAT / Label Studio / Roboflow layouts."""

from __future__ import annotations

import json
import math
from pathlib import Path

import datasets
import numpy as np
import PIL.Image
import pytest

from segtune.data.build import build_datasets
from segtune.data.sources import coco as coco_module
from segtune.data.sources import load_source
from segtune.data.sources.base import undecoded
from segtune.data.sources.rasterize import Shape, paint, polygon_rle
from segtune.errors import DatasetError
from segtune.recipe import load_recipe
from segtune.train import train
from tests.annotation_fixtures import (
    SIZE,
    coco_document,
    compressed_rle,
    count_paints,
    image,
    make_coco_file,
    make_cvat,
    make_label_studio,
    make_roboflow,
    rect,
    tiny_run,
    uncompressed_rle,
    write_json,
)
from tests.data_fixtures import isolated_datasets_cache, recipe  # noqa: F401 (fixture)


def coco_recipe(path, *overrides: str):
    return recipe("data.source=coco", f"data.path={path}", *overrides)


def masks_by_image(source) -> dict[str, np.ndarray]:
    """Image file name -> its rasterised mask, over every split."""
    found = {}
    for split in source.splits.values():
        for row in undecoded(split):
            found[row["image"]["path"].rsplit("/", 1)[-1]] = np.array(PIL.Image.open(row["label"]["path"]))
    return found


# --- rasterisation -------------------------------------------------------------------------------------------


def regular_polygon(cx: float, cy: float, r: float, n: int = 360) -> list[float]:
    return [
        v for k in range(n) for v in (cx + r * math.cos(2 * math.pi * k / n), cy + r * math.sin(2 * math.pi * k / n))
    ]


@pytest.mark.parametrize(
    "points, area",
    [
        (rect(10, 10, 50, 45), 40 * 35),  # 1,400 px
        ([5.3, 7.1, 80.2, 12.9, 30.6, 60.4], abs(74.9 * 53.3 - 25.3 * 5.8) / 2),  # ~1,923 px, edges off the grid
        (regular_polygon(50, 50, 25), 0.5 * 360 * 25**2 * math.sin(2 * math.pi / 360)),  # a circle, ~1,963 px
        (regular_polygon(50.5, 49.3, 18.2), 0.5 * 360 * 18.2**2 * math.sin(2 * math.pi / 360)),  # ~1,040 px
    ],
)
def test_polygon_areas_match_the_analytic_area_within_one_percent(points, area):
    assert area >= 1000
    mask = paint([Shape(1, polygon_rle(points, 100, 100))], 100, 100)
    assert mask.sum() == pytest.approx(area, rel=0.01)


def test_smaller_shapes_are_painted_on_top_and_crowd_is_ignored_under_instances():
    big, small = polygon_rle(rect(0, 0, 40, 40), 40, 40), polygon_rle(rect(10, 10, 20, 20), 40, 40)
    crowd = polygon_rle(rect(0, 30, 40, 40), 40, 40)
    # the small shape comes first in the file, yet stays visible; the crowd band is ignored
    mask = paint([Shape(2, small), Shape(1, big), Shape(255, crowd, crowd=True)], 40, 40)
    assert (mask[10:20, 10:20] == 2).all() and mask[0:10].max() == 1
    assert (mask[30:] == 1).all()  # a non-crowd instance over a crowd region keeps its class
    only_crowd = paint([Shape(255, crowd, crowd=True)], 40, 40)
    assert (only_crowd[30:] == 255).all() and (only_crowd[:30] == 0).all()


def test_masks_are_sixteen_bit_beyond_255_classes():
    mask = paint([Shape(300, polygon_rle(rect(0, 0, 4, 4), 8, 8))], 8, 8)
    assert mask.dtype == np.uint16 and mask.max() == 300


# --- the source ---------------------------------------------------------------------------------------------


def test_polygons_rle_crowd_and_overlaps_become_class_ids(tmp_path):
    region = np.zeros((SIZE, SIZE), bool)
    region[40:48, :] = True
    corner = np.zeros((SIZE, SIZE), bool)
    corner[56:, 56:] = True
    annotations = [
        {"category_id": 7, "segmentation": [rect(8, 8, 16, 16)]},  # small dog listed before the big cat: on top
        {"category_id": 3, "segmentation": [rect(0, 0, SIZE, 32)]},
        {"category_id": 7, "segmentation": uncompressed_rle(region)},  # dog band, uncompressed counts
        {"category_id": 3, "segmentation": compressed_rle(corner)},  # cat corner, compressed counts
        {"category_id": 3, "segmentation": [rect(0, 50, 32, 56)], "iscrowd": 1},  # a crowd of cats: ignored
    ]
    for i in range(2):
        image(tmp_path / f"a{i}.png", i)
    write_json(tmp_path / "export.json", coco_document(["a0.png", "a1.png"], {1: annotations}))
    source = load_source(coco_recipe(tmp_path / "export.json", "data.val_ratio=0.5"))
    assert source.id2label == {0: "background", 1: "cat", 2: "dog"}
    assert "held out 1 of 2 images, stratified" in source.split_summary  # as every source without an eval split
    mask = masks_by_image(source)["a0.png"]
    assert (mask[8:16, 8:16] == 2).all() and (mask[0:8] == 1).all()
    assert (mask[40:48] == 2).all() and (mask[56:, 56:] == 1).all()
    assert (mask[50:56, :32] == 255).all() and (mask[50:56, 32:] == 0).all()
    assert (mask[32:40] == 0).all()  # no annotation: background
    assert np.array_equal(masks_by_image(source)["a1.png"][[0, 40, 50]], np.array([[1] * SIZE, [2] * SIZE, [0] * SIZE]))


def test_the_recipe_id2label_orders_the_classes_by_name(tmp_path):
    path = make_coco_file(tmp_path)
    source = load_source(coco_recipe(path, "data.val_ratio=0.5", "data.id2label={0: bg, 1: dog, 2: cat}"))
    assert source.id2label == {0: "bg", 1: "dog", 2: "cat"}
    assert (masks_by_image(source)["img_0.png"][0] == 2).all()
    with pytest.raises(DatasetError, match=r"classes \['dog'\] are not in data.id2label"):
        load_source(coco_recipe(path, "data.val_ratio=0.5", "data.id2label={0: bg, 1: cat}"))


def test_crowd_follows_the_ignore_index(tmp_path):
    image(tmp_path / "a.png")
    image(tmp_path / "b.png")
    crowd = [{"category_id": 3, "segmentation": [rect(0, 0, 8, 8)], "iscrowd": 1}]
    write_json(tmp_path / "x.json", coco_document(["a.png", "b.png"], {1: crowd}))
    source = load_source(coco_recipe(tmp_path / "x.json", "data.val_ratio=0.5", "data.ignore_index=300"))
    mask = masks_by_image(source)["a.png"]
    assert mask.dtype == np.uint16 and (mask[:8, :8] == 300).all()


@pytest.mark.parametrize(
    "make, splits",
    [
        (make_cvat, {"train": 2, "validation": 2}),
        (make_label_studio, {"train": 2, "validation": 2}),
        (make_roboflow, {"train": 3, "validation": 3}),
    ],
)
def test_tool_layouts_resolve_their_images(tmp_path, make, splits):
    root = make(tmp_path / "export")
    data = build_datasets(coco_recipe(root, "data.val_ratio=0.5"))
    source = load_source(coco_recipe(root, "data.val_ratio=0.5"))
    assert {split: len(rows) for split, rows in source.splits.items()} == splits
    assert source.id2label == {0: "background", 1: "cat", 2: "dog"}  # Roboflow's parent category left out
    sample = data.eval[0]
    assert sample["labels"].shape == (SIZE, SIZE) and set(sample["labels"].unique().tolist()) == {0, 1, 2}


def test_cvat_subsets_are_the_splits(tmp_path):
    root = make_cvat(tmp_path, count=2)
    (root / "annotations" / "instances_default.json").rename(root / "annotations" / "instances_Train.json")
    document = coco_document(["v.png"])
    image(root / "images" / "Validation" / "v.png")
    write_json(root / "annotations" / "instances_Validation.json", document)
    source = load_source(coco_recipe(root))
    assert len(source.splits["train"]) == 2 and len(source.splits["validation"]) == 1


# --- mistakes -----------------------------------------------------------------------------------------------


def test_a_polygon_with_fewer_than_three_points_names_the_file_and_annotation(tmp_path):
    image(tmp_path / "a.png")
    write_json(tmp_path / "x.json", coco_document(["a.png"], {1: [{"category_id": 3, "segmentation": [[1, 1, 9, 9]]}]}))
    with pytest.raises(DatasetError, match=r"x\.json: annotation 1: polygon with 2 points; a polygon needs at least 3"):
        load_source(coco_recipe(tmp_path / "x.json", "data.val_ratio=0.5"))


def test_a_category_outside_categories_names_the_file(tmp_path):
    image(tmp_path / "a.png")
    write_json(
        tmp_path / "x.json", coco_document(["a.png"], {1: [{"category_id": 5, "segmentation": [rect(0, 0, 4, 4)]}]})
    )
    with pytest.raises(DatasetError, match=r"x\.json: annotation 1: category_id 5 is not in 'categories' \(\[3, 7\]\)"):
        load_source(coco_recipe(tmp_path / "x.json", "data.val_ratio=0.5"))


def test_a_missing_image_names_the_file_or_is_skipped(tmp_path):
    path = make_coco_file(tmp_path, count=3)
    (tmp_path / "img_1.png").unlink()
    with pytest.raises(DatasetError, match=r"export\.json: image 'img_1\.png' \(id 2\) not found"):
        load_source(coco_recipe(path, "data.val_ratio=0.5"))
    source = load_source(coco_recipe(path, "data.val_ratio=0.5", "data.skip_invalid=true"))
    assert sum(len(s) for s in source.splits.values()) == 2 and len(source.skipped) == 1


def test_a_file_that_is_not_coco_json_is_named(tmp_path):
    (tmp_path / "broken.json").write_text("[1, 2")
    with pytest.raises(DatasetError, match=r"broken\.json: cannot read COCO JSON: "):
        load_source(coco_recipe(tmp_path / "broken.json", "data.val_ratio=0.5"))
    write_json(tmp_path / "labelme.json", {"shapes": [], "imagePath": "a.png"})
    with pytest.raises(DatasetError, match=r"labelme\.json: not a COCO JSON file \(expected an object with 'images'"):
        load_source(coco_recipe(tmp_path / "labelme.json", "data.val_ratio=0.5"))


def test_a_single_export_needs_val_ratio_and_a_bad_path_is_named(tmp_path):
    path = make_coco_file(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="set data.val_ratio"):
        load_source(coco_recipe(path))
    with pytest.raises(DatasetError, match="no COCO export found"):
        load_source(coco_recipe(tmp_path / "empty"))


# --- the cache ----------------------------------------------------------------------------------------------


def test_a_second_build_reads_the_cache_and_an_edited_file_rasterises_again(tmp_path, monkeypatch):
    path = make_coco_file(tmp_path, count=2)
    painted = count_paints(monkeypatch, coco_module)
    first = load_source(coco_recipe(path, "data.val_ratio=0.5"))
    assert len(painted) == 2
    second = load_source(coco_recipe(path, "data.val_ratio=0.5"))
    assert len(painted) == 2 and masks_by_image(second).keys() == masks_by_image(first).keys()
    document = json.loads(path.read_text())
    document["annotations"][0]["segmentation"] = [rect(0, 0, SIZE, 8)]
    path.write_text(json.dumps(document))
    third = load_source(coco_recipe(path, "data.val_ratio=0.5"))
    assert len(painted) == 4
    assert (masks_by_image(third)["img_0.png"][8:32] == 0).all() and (
        masks_by_image(first)["img_0.png"][8:32] == 1
    ).all()
    load_source(coco_recipe(path, "data.val_ratio=0.5", "data.ignore_index=254"))  # another setting: new masks
    assert len(painted) == 6


def test_a_failed_rasterisation_caches_nothing(tmp_path):
    cache = Path(datasets.config.HF_DATASETS_CACHE) / "segtune_masks"  # isolated per test (autouse fixture)
    image(tmp_path / "a.png")
    image(tmp_path / "b.png")
    bad = coco_document(["a.png", "b.png"], {2: [{"category_id": 3, "segmentation": [[1, 1, 9, 9]]}]})
    write_json(tmp_path / "x.json", bad)
    with pytest.raises(DatasetError, match="polygon with 2 points"):
        load_source(coco_recipe(tmp_path / "x.json", "data.val_ratio=0.5"))
    assert not list(cache.iterdir())  # no staging folder left behind
    write_json(tmp_path / "x.json", coco_document(["a.png", "b.png"]))
    source = load_source(coco_recipe(tmp_path / "x.json", "data.val_ratio=0.5"))
    assert [p.name.startswith("coco-") for p in cache.iterdir()] == [True]
    assert (masks_by_image(source)["b.png"][:32] == 1).all()


# --- end to end ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make, path, overrides",
    [
        (make_coco_file, "export.json", ["data.val_ratio=0.5"]),
        (make_cvat, "", ["data.val_ratio=0.5"]),
        (make_label_studio, "", ["data.val_ratio=0.5"]),
        (make_roboflow, "", []),
    ],
    ids=["json", "cvat", "label_studio", "roboflow"],
)
def test_each_coco_layout_trains_end_to_end(tmp_path, make, path, overrides):
    make(tmp_path / "export")
    out = tmp_path / "run"
    data_path = tmp_path / "export" / path
    train(load_recipe("demo.yaml", tiny_run(out, "data.source=coco", f"data.path={data_path}", *overrides)))
    config = json.loads((out / "config.json").read_text())
    assert config["id2label"] == {"0": "background", "1": "cat", "2": "dog"}
    assert json.loads((out / "metrics.json").read_text())["step"] == 2


def test_a_broken_export_stops_before_the_first_step(tmp_path):
    root = make_roboflow(tmp_path / "export", count=2)
    (root / "valid" / "valid_0.jpg.rf.abc.png").unlink()
    with pytest.raises(DatasetError, match=r"valid/_annotations\.coco\.json: image 'valid_0\.jpg\.rf\.abc\.png'"):
        train(load_recipe("demo.yaml", tiny_run(tmp_path / "run", "data.source=coco", f"data.path={root}")))
    assert not (tmp_path / "run" / "checkpoints").exists()
