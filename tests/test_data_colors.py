"""Colour masks: `data.colors` and id2label.json colours, decoded in the worker, and shown as the run's palette."""

from __future__ import annotations

import json
import pickle

import datasets
import numpy as np
import pytest
from PIL import Image

from segtune.commands import main
from segtune.data import build_datasets, make_loader
from segtune.data.carry import raise_carried_error
from segtune.data.class_pixels import class_pixels
from segtune.data.colors import ColorTable
from segtune.data.labels import LabelSpec, read_id2label, read_label_colors
from segtune.errors import DatasetError, RecipeError
from segtune.recipe import load_recipe
from segtune.recipe.colors import parse_color
from segtune.train import train
from tests.conftest import TINY_RUN
from tests.data_fixtures import (
    isolated_datasets_cache,  # noqa: F401 (autouse fixture)
    make_cityscapes,
    png_bytes,
    recipe,
    save,
    scene,
)

# Colours far from the default (VOC) palette, so that a picture drawn in them shows which palette it used.
COLOURS = ((17, 34, 51), (200, 10, 90), (0, 255, 127))
HEX = {"#112233": 0, "#c80a5a": 1, "#00FF7F": 2}


def colour_folder(root, count=2, size=(24, 32), alpha=False, colours=COLOURS):
    """train/ and val/ of RGB (or RGBA) colour masks painted from `scene`'s class bands; returns the root."""
    table = np.array(colours, np.uint8)
    for split in ("train", "val"):
        for i in range(count):
            image, ids = scene(i + (100 if split == "val" else 0), *size)
            mask = table[ids]
            if alpha:  # every alpha value, transparent included: only the colour counts
                mask = np.dstack([mask, (np.arange(ids.size) % 256).reshape(ids.shape).astype(np.uint8)])
            save(root / split / "images" / f"s{i}.png", image)
            save(root / split / "masks" / f"s{i}.png", mask)
    return root


def colour_recipe(root, *overrides):
    return recipe("data.source=folder", f"data.path={root}", f"data.colors={json.dumps(HEX)}", *overrides)


@pytest.mark.parametrize("alpha", [False, True], ids=["rgb", "rgba"])
def test_colour_masks_decode_to_the_class_ids_they_were_painted_from(tmp_path, alpha):
    data = build_datasets(colour_recipe(colour_folder(tmp_path, alpha=alpha)))
    assert data.labels.num_labels == 3  # from the colours' ids: no names, no data.num_labels
    assert data.labels.palette == COLOURS
    for index in range(2):
        labels = data.eval[index]["labels"]
        assert labels.dtype.is_floating_point is False and labels.numpy().dtype == np.uint8
        np.testing.assert_array_equal(labels.numpy(), scene(100 + index)[1])
    assert set(data.train[0]["labels"].unique().tolist()) <= {0, 1, 2, 255}


def test_colour_masks_decode_in_dataloader_workers(tmp_path):
    data = build_datasets(colour_recipe(colour_folder(tmp_path)))
    batches = list(make_loader(data.eval, batch_size=2, num_workers=1))
    labels = batches[0]["labels"]
    np.testing.assert_array_equal(labels.numpy(), np.stack([scene(100)[1], scene(101)[1]]))


@pytest.mark.parametrize(
    "written", ["#C80A5A", "#c80a5a", [200, 10, 90], (200, 10, 90), "[200, 10, 90]", "200,10,90", "(200, 10, 90)"]
)
def test_every_way_of_writing_a_colour_reads_the_same(written):
    assert parse_color(written) == (200, 10, 90)


def test_hex_and_rgb_keys_mix_in_a_yaml_recipe(tmp_path):
    root = colour_folder(tmp_path / "data")
    recipe_file = tmp_path / "colours.yaml"
    recipe_file.write_text(
        f"data:\n  source: folder\n  path: {root}\n  num_labels: 3\n"
        '  colors:\n    "#112233": 0\n    "[200, 10, 90]": 1\n    "0, 255, 127": 2\n'
    )
    loaded = load_recipe(recipe_file, ["augment.scale=[64,32]", "augment.crop_size=[32,32]"])
    assert loaded.data.colors == {"#112233": 0, "[200, 10, 90]": 1, "0, 255, 127": 2}
    assert "data.colors" in loaded.flat()  # one mapping, not a section
    data = build_datasets(loaded)
    np.testing.assert_array_equal(data.eval[1]["labels"].numpy(), scene(101)[1])
    assert load_recipe(None, [f"data.colors={json.dumps(loaded.data.colors)}"]).data.colors == loaded.data.colors


@pytest.mark.parametrize(
    ("colors", "expected"),
    [
        ({"#11223": 0}, "data.colors: entry '#11223': expected a hex colour '#rrggbb' or 3 integers 0-255"),
        ({"[256, 0, 0]": 0}, "data.colors: entry '[256, 0, 0]': expected a hex colour '#rrggbb' or 3 integers"),
        (
            {"#112233": 3},
            "data.colors: entry '#112233': expected a class id in [0, 3) or the ignore index 255, found 3",
        ),
        ({"#112233": -1}, "expected a class id in [0, 3) or the ignore index 255, found -1"),
        ({"#ff0000": 0, "[255, 0, 0]": 1}, "entry '[255, 0, 0]' lists colour [255, 0, 0] again (first as '#ff0000')"),
        ({}, "data.colors: expected at least one colour -> class id entry, found none"),
    ],
)
def test_bad_colours_are_refused_when_the_recipe_loads(colors, expected):
    with pytest.raises(RecipeError) as raised:
        load_recipe(None, ["data.num_labels=3", f"data.colors={json.dumps(colors)}"])
    assert expected in str(raised.value)


def test_colours_may_map_to_the_ignore_index_and_cannot_be_reduced_again():
    loaded = load_recipe(None, ["data.num_labels=3", 'data.colors={"#ffffff": 255, "#000000": 0}'])
    assert loaded.data.colors == {"#ffffff": 255, "#000000": 0}
    with pytest.raises(RecipeError, match="data.colors: colours give class ids directly; expected data.reduce_labels"):
        load_recipe(None, ["data.reduce_labels=true", 'data.colors={"#000000": 0}'])


def test_colours_cannot_be_mapped_again_by_a_label_map():
    with pytest.raises(RecipeError, match=r"data.colors: colours give class ids directly; expected no data.label_map"):
        load_recipe(None, ["data.num_labels=3", 'data.colors={"#000000": 0}', "data.label_map={255: 1}"])
    colours = ColorTable({(1, 2, 3): 0, (4, 5, 6): 1}, "id2label.json")  # colours from the dataset's own file
    with pytest.raises(DatasetError, match=r"id2label.json: colour masks give class ids directly.*data.label_map"):
        LabelSpec(id2label={0: "a", 1: "b"}, colors=colours, overrides={255: 1})


def test_ignored_colour_and_class_ids_beyond_the_colours(tmp_path):
    colour_folder(tmp_path, colours=((255, 255, 255), (200, 10, 90), (0, 255, 127)))
    data = build_datasets(
        recipe(
            "data.source=folder",
            f"data.path={tmp_path}",
            'data.colors={"#ffffff": 255, "#c80a5a": 1, "#00ff7f": 2}',
            "data.num_labels=4",
        )
    )
    expected = scene(100)[1].copy()
    expected[expected == 0] = 255
    np.testing.assert_array_equal(data.eval[0]["labels"].numpy(), expected)
    default_0, default_3 = (0, 0, 0), (128, 128, 0)  # classes without a colour keep the default palette's
    assert data.labels.palette == (default_0, (200, 10, 90), (0, 255, 127), default_3)


def test_an_unlisted_colour_names_the_file_the_colour_and_its_pixels(tmp_path):
    root = colour_folder(tmp_path)
    mask = np.array(Image.open(root / "val" / "masks" / "s1.png"))
    mask[0, :5] = (171, 171, 171)
    mask[1, :2] = (1, 2, 3)
    save(root / "val" / "masks" / "s1.png", mask)
    data = build_datasets(colour_recipe(root, "data.check=off"))
    batches = list(make_loader(data.eval, batch_size=1, num_workers=1))  # read in a worker, carried as data
    with pytest.raises(DatasetError) as raised:
        raise_carried_error(batches[1])
    message = str(raised.value)
    assert "val/masks/s1.png" in message and "mask colours not in data.colors" in message
    assert "#ababab (5 pixels), #010203 (2 pixels)" in message
    for level in ("quick", "full"):  # the pre-flight check decodes the same way (quick: every mask of a small split)
        with pytest.raises(DatasetError, match=r"(?s)1 problem.*s1\.png.*#ababab \(5 pixels\)"):
            build_datasets(colour_recipe(root, f"data.check={level}"))


def test_a_hub_dataset_of_colour_masks_decodes_them_too(tmp_path):
    table = np.array(COLOURS, np.uint8)
    splits = {}
    for split, offset in (("train", 0), ("validation", 100)):
        pairs = [scene(offset + i) for i in range(2)]
        rows = {
            "image": [{"bytes": png_bytes(image), "path": None} for image, _ in pairs],
            "label": [{"bytes": png_bytes(table[ids]), "path": None} for _, ids in pairs],
        }
        features = datasets.Features({"image": datasets.Image(), "label": datasets.Image()})
        splits[split] = datasets.Dataset.from_dict(rows, features=features)
    datasets.DatasetDict(splits).save_to_disk(str(tmp_path / "saved"))
    data = build_datasets(
        recipe("data.source=hub", f"data.path={tmp_path / 'saved'}", f"data.colors={json.dumps(HEX)}")
    )
    np.testing.assert_array_equal(data.eval[1]["labels"].numpy(), scene(101)[1])


def test_class_pixel_counts_of_colour_masks_count_the_decoded_ids(tmp_path):
    data = build_datasets(colour_recipe(colour_folder(tmp_path)))
    counts = class_pixels(data.train.rows, data.labels, "train", skip_invalid=False)
    expected = np.bincount(np.concatenate([scene(i)[1].ravel() for i in range(2)]), minlength=3)
    np.testing.assert_array_equal(counts.pixels, expected)


def test_single_channel_masks_stay_class_ids_when_colours_are_given(tmp_path):
    for split in ("train", "val"):
        image, ids = scene(7)
        save(tmp_path / split / "images" / "a.png", image)
        save(tmp_path / split / "masks" / "a.png", ids)  # mode L
    data = build_datasets(colour_recipe(tmp_path))
    np.testing.assert_array_equal(data.eval[0]["labels"].numpy(), scene(7)[1])


def test_id2label_json_names_alone_or_with_colours(tmp_path):
    root = colour_folder(tmp_path / "coloured")
    names_and_colours = {
        "0": {"name": "sky", "color": "#112233"},
        "1": {"name": "road", "color": [200, 10, 90]},
        "2": {"name": "tree", "color": "#00ff7f"},
    }
    (root / "id2label.json").write_text(json.dumps(names_and_colours))
    data = build_datasets(recipe("data.source=folder", f"data.path={root}"))
    assert data.labels.id2label == {0: "sky", 1: "road", 2: "tree"}
    assert data.labels.palette == COLOURS and data.labels.colors.origin == str(root / "id2label.json")
    np.testing.assert_array_equal(data.eval[0]["labels"].numpy(), scene(100)[1])
    # the plain form is read as before: names, no colours; the two forms may mix
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps({"0": "sky", "1": {"name": "road", "color": "#c80a5a"}, "2": "tree"}))
    assert read_id2label(plain) == {0: "sky", 1: "road", 2: "tree"}
    assert read_label_colors(plain).colors == {(200, 10, 90): 1}
    plain.write_text(json.dumps({"0": "sky", "1": "road"}))
    assert read_id2label(plain) == {0: "sky", 1: "road"} and read_label_colors(plain) is None


def test_recipe_colours_replace_the_id2label_json_colours(tmp_path):
    root = colour_folder(tmp_path)
    stale = {str(i): {"name": n, "color": "#0000ff" if i else "#ffffff"} for i, n in enumerate(["a", "b", "c"])}
    stale["1"]["color"] = "#00ff00"
    (root / "id2label.json").write_text(json.dumps(stale))
    data = build_datasets(colour_recipe(root))
    assert data.labels.colors.origin == "data.colors" and data.labels.id2label[2] == "c"
    np.testing.assert_array_equal(data.eval[1]["labels"].numpy(), scene(101)[1])


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ({"0": {"name": "sky", "colour": "#000000"}}, 'class 0: expected a name, or {"name": ..., "color"'),
        ({"0": {"name": "sky", "color": "#00000g"}}, "entry '#00000g': expected a hex colour"),
        (
            {"0": {"name": "a", "color": "#000000"}, "1": {"name": "b", "color": [0, 0, 0]}},
            "lists colour [0, 0, 0] again",
        ),
        (
            {"0": {"name": "a", "color": "#000000"}, "1": {"name": "b", "color": "#000000"}},
            "entry '#000000' lists colour [0, 0, 0] again (first as '#000000')",
        ),
    ],
)
def test_bad_id2label_json_colours_name_the_file(tmp_path, content, expected):
    path = tmp_path / "id2label.json"
    path.write_text(json.dumps(content))
    with pytest.raises(DatasetError) as raised:
        read_label_colors(path)
    assert str(path) in str(raised.value) and expected in str(raised.value)


def test_a_colour_id_beyond_the_named_classes_is_refused_naming_its_source(tmp_path):
    root = colour_folder(tmp_path)
    (root / "id2label.json").write_text(json.dumps({"0": "a", "1": "b"}))
    with pytest.raises(DatasetError, match=r"data.colors: entry '#00ff7f': expected a class id in \[0, 2\)"):
        build_datasets(colour_recipe(root))


def test_colours_are_refused_for_a_source_that_maps_its_own_ids(tmp_path):
    make_cityscapes(tmp_path, per_split=1)
    with pytest.raises(
        DatasetError, match="data.colors: colour masks give class ids directly; they cannot be combined"
    ):
        build_datasets(recipe("data.source=cityscapes", f"data.path={tmp_path}", 'data.colors={"#804080": 0}'))


def test_many_unlisted_colours_are_listed_commonest_first_then_counted():
    table = ColorTable({(0, 0, 0): 0}, "data.colors")
    rgb = np.zeros((1, 30 * 31 // 2, 3), np.uint8)
    start = 0
    for k in range(1, 31):  # colour (k, 0, 0) on k pixels
        rgb[0, start : start + k, 0] = k
        start += k
    with pytest.raises(DatasetError) as raised:
        table.decode(rgb[:, 1:], "m.png")  # drop one pixel of (1, 0, 0), so it is gone; 29 colours remain
    message = str(raised.value)
    assert message.startswith("m.png: mask colours not in data.colors: #1e0000 (30 pixels), #1d0000 (29 pixels),")
    assert "#150000 (21 pixels) and 19 more; expected one of the 1 colours listed there" in message


def test_the_colour_table_travels_to_workers_without_its_lookup_table():
    table = ColorTable({(1, 2, 3): 0, (4, 5, 6): 1}, "data.colors")
    rgb = np.array([[[1, 2, 3], [4, 5, 6]]], np.uint8)
    np.testing.assert_array_equal(table.decode(rgb, "m.png"), [[0, 1]])  # builds the 2**24 lookup table
    copy = pickle.loads(pickle.dumps(table))
    assert len(pickle.dumps(table)) < 1000 and copy == table
    np.testing.assert_array_equal(copy.decode(rgb, "m.png"), [[0, 1]])
    wide = ColorTable({(1, 2, 3): 0, (4, 5, 6): 300}, "data.colors").decode(rgb, "m.png")
    assert wide.dtype == np.uint16 and wide.tolist() == [[0, 300]]


def test_a_colour_mask_folder_trains_and_its_colours_are_the_pictures(tmp_path):
    root = colour_folder(tmp_path / "data", count=4, size=(64, 64))
    out = tmp_path / "run"
    run_recipe = load_recipe(
        "demo.yaml",
        [
            *TINY_RUN,
            "data.source=folder",
            f"data.path={root}",
            f"data.colors={json.dumps(HEX)}",
            f"train.output_dir={out}",
        ],
    )
    results = train(run_recipe)
    assert results["confusion_matrix"].sum() == 4 * 64 * 64  # every eval pixel decoded to a class
    config = json.loads((out / "config.json").read_text())
    assert config["palette"] == [list(c) for c in COLOURS]
    grid = np.asarray(Image.open(out / "predictions.png").convert("RGB")).reshape(-1, 3)
    drawn = {tuple(c) for c in np.unique(grid, axis=0).tolist()}
    assert set(COLOURS) <= drawn  # the ground-truth column shows every class in the user's colours
    assert load_recipe(out / "recipe.yaml").data.colors == HEX  # evaluation reads the same colours back
    assert main(["evaluate", "--model", str(out), "--recipe", str(out / "recipe.yaml")]) == 0
    predicted = tmp_path / "predicted"
    image = root / "val" / "images" / "s0.png"
    assert main(["predict", "--model", str(out), str(image), "--out", str(predicted), "--raw"]) == 0
    raw = np.asarray(Image.open(predicted / "s0_labels.png"))
    mask = np.asarray(Image.open(predicted / "s0_mask.png").convert("RGB"))
    np.testing.assert_array_equal(mask, np.array(COLOURS, np.uint8)[raw])
