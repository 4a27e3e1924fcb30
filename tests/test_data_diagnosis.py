"""The mask diagnosis before step 1 (issue 14) and `data.label_map`: the mistakes recognised with the recipe line
that fixes each, the warnings, the sample the quick check decodes, and the label map in every label contract."""

import logging

import numpy as np
import pytest

from segtune.data import build_datasets, check_dataset, preflight
from segtune.data.labels import LabelSpec, label_spec
from segtune.data.mask_values import SAMPLE_SIZE, sampled
from segtune.data.sources import load_source
from segtune.errors import DatasetError
from tests.data_fixtures import folder_recipe, make_folder, recipe, save, scene


def _folder(root, mask: np.ndarray, count: int = 3):
    """train/ and val/ folders of `count` random images, each with `mask` (H, W), or (H, W, 3) colours, as its mask."""
    for split in ("train", "val"):
        for i in range(count):
            rgb = np.random.default_rng(i).integers(0, 256, (*mask.shape[:2], 3), dtype=np.uint8)
            save(root / split / "images" / f"img_{i}.png", rgb)
            save(root / split / "masks" / f"img_{i}.png", mask)
    return root


def _binary_folder(root, count: int = 3, height: int = 24, width: int = 32):
    """`_folder` whose masks hold 0 (left half) and 255 (right half)."""
    mask = np.zeros((height, width), np.uint8)
    mask[:, width // 2 :] = 255
    return _folder(root, mask, count)


def _rewrite_masks(root, change) -> None:
    """Apply `change` (uint8 mask -> array) to every mask of a `make_folder` tree."""
    for path in sorted(root.glob("*/masks/*.png")):
        import PIL.Image

        save(path, change(np.array(PIL.Image.open(path))))


# --- the mistakes that stop the run ---


def test_binary_masks_whose_foreground_is_the_ignore_index_stop_with_the_label_map_line(tmp_path):
    root = _binary_folder(tmp_path)
    with pytest.raises(DatasetError) as error:
        build_datasets(folder_recipe(root, "data.num_labels=2"))
    message = str(error.value)
    assert "\n" not in message  # one line
    assert message.startswith(
        f"{root}: data.check=quick: with 2 classes, 6 masks (mask ('{root}/train/masks/img_0.png')"
    )
    assert "hold only 0 and 255, the ignore index: class 1 never occurs" in message
    assert message.endswith("If 255 is the foreground, set data.label_map: {255: 1}")


def test_the_label_map_fixes_binary_masks(tmp_path):
    data = build_datasets(folder_recipe(_binary_folder(tmp_path), "data.num_labels=2", "data.label_map={255: 1}"))
    labels = data.eval[0]["labels"]
    assert labels[:, :16].eq(0).all() and labels[:, 16:].eq(1).all()
    assert data.warnings == []


def test_colours_mapped_to_a_class_and_the_ignore_index_are_not_taken_for_binary_masks(tmp_path):
    """Colour ids are given colour by colour, so data.label_map (refused beside data.colors) is never suggested."""
    mask = np.zeros((24, 32, 3), np.uint8)
    mask[:, 16:] = 255
    root = _folder(tmp_path, mask)
    data = build_datasets(folder_recipe(root, "data.num_labels=2", 'data.colors={"#000000": 0, "#ffffff": 255}'))
    assert data.eval[0]["labels"][:, 16:].eq(255).all()
    assert any("class 1 'class_1' never occurs in the 3 train masks" in w for w in data.warnings), data.warnings


def test_binary_masks_with_another_ignore_index_get_the_same_fix(tmp_path):
    root = _binary_folder(tmp_path)
    with pytest.raises(DatasetError, match=r"set data.label_map: \{255: 1\}$"):
        build_datasets(folder_recipe(root, "data.num_labels=2", "data.ignore_index=100"))


def test_ids_scaled_for_visibility_stop_with_the_label_map_that_undoes_it(tmp_path):
    make_folder(tmp_path, "split", count=2, num_labels=4)
    _rewrite_masks(tmp_path, lambda mask: mask * 85)  # 0, 85, 170, 255
    with pytest.raises(DatasetError) as error:
        build_datasets(folder_recipe(tmp_path, "data.num_labels=4"))
    message = str(error.value)
    assert "\n" not in message
    assert "mask values [0, 85, 170, 255] in 4 masks (mask (" in message and "train/masks/img_0.png')" in message
    assert "are multiples of 85 below 4 x 85: class ids scaled for visibility" in message
    assert "expected class ids in [0, 4) or the ignore index 255" in message
    assert message.endswith("To undo the scaling, set data.label_map: {85: 1, 170: 2, 255: 3}")
    data = build_datasets(folder_recipe(tmp_path, "data.num_labels=4", "data.label_map={85: 1, 170: 2, 255: 3}"))
    assert sorted(np.unique(data.eval[0]["labels"].numpy()).tolist()) == [0, 1, 2, 3]


def test_scaled_ids_beside_a_real_ignore_value_keep_it_ignored(tmp_path):
    make_folder(tmp_path, "split", count=2, num_labels=3)
    _rewrite_masks(tmp_path, lambda mask: np.where(np.arange(32) < 2, 255, mask * 10).astype(np.uint8))
    with pytest.raises(DatasetError, match=r"multiples of 10 below 3 x 10.*set data.label_map: \{10: 1, 20: 2\}$"):
        build_datasets(folder_recipe(tmp_path))


def test_colour_masks_stop_with_the_colours_found(tmp_path):
    make_folder(tmp_path, "split", count=2)
    colours = np.array([[0, 0, 0], [255, 0, 0], [0, 128, 0]], np.uint8)
    _rewrite_masks(tmp_path, lambda mask: colours[mask])
    with pytest.raises(DatasetError) as error:
        build_datasets(folder_recipe(tmp_path))
    message = str(error.value)
    assert "\n" not in message
    assert "4 of 4 masks checked are colour images (mask (" in message and "train/masks/img_0.png')" in message
    assert "found 3 colours; expected one channel of class ids" in message
    assert message.endswith('data.colors: {"#000000": 0, "#008000": 1, "#ff0000": 2}')


def test_a_grey_rgb_mask_of_the_wrong_size_among_colour_masks_keeps_its_own_problem(tmp_path):
    """Only masks that fail as colour images count as colour masks, however many came before."""
    make_folder(tmp_path, "split", count=10)
    colours = np.array([[0, 0, 0], [255, 0, 0], [0, 128, 0]], np.uint8)
    _rewrite_masks(tmp_path, lambda mask: colours[mask])
    grey = tmp_path / "train" / "masks" / "img_9.png"  # after 9 colour masks: grey as RGB, and a row too few
    save(grey, np.repeat(np.zeros((23, 32, 1), np.uint8), 3, axis=2))
    with pytest.raises(DatasetError) as error:
        build_datasets(folder_recipe(tmp_path))
    message = str(error.value)
    assert "found 2 problem(s) in 20 samples" in message and "19 of 19 masks checked are colour images" in message
    assert message.split("\n")[2].endswith(
        "train/images/img_9.png') is 24x32 (HxW) but mask ('" + str(grey) + "') is 23x32"
    )


def test_rgba_colour_masks_are_named_by_their_rgb(tmp_path):
    make_folder(tmp_path, "split", count=1)
    colours = np.array([[0, 0, 0, 255], [0, 0, 255, 255], [9, 9, 9, 255]], np.uint8)
    _rewrite_masks(tmp_path, lambda mask: colours[mask])
    with pytest.raises(
        DatasetError, match=r'2 of 2 masks .* data.colors: \{"#000000": 0, "#0000ff": 1, "#090909": 2\}'
    ):
        build_datasets(folder_recipe(tmp_path))


def test_values_outside_the_classes_stay_listed_per_file(tmp_path):
    make_folder(tmp_path, "split", count=2)
    mask = scene(1)[1].copy()
    mask[0, 0] = 42
    save(tmp_path / "train" / "masks" / "img_1.png", mask)
    with pytest.raises(DatasetError) as error:
        build_datasets(folder_recipe(tmp_path))
    lines = str(error.value).splitlines()
    assert lines[0] == f"{tmp_path}: data.check=quick found 1 problem(s) in 4 samples:"
    assert lines[1].startswith("  train sample 1: mask (") and "train/masks/img_1.png'): mask values [42]" in lines[1]


def test_skip_invalid_only_warns_about_a_recognised_mistake(tmp_path, caplog):
    root = _binary_folder(tmp_path)
    with caplog.at_level(logging.WARNING):
        build_datasets(folder_recipe(root, "data.num_labels=2", "data.skip_invalid=true"))
    assert "set data.label_map: {255: 1}" in caplog.text


def test_check_off_diagnoses_nothing(tmp_path):
    build_datasets(folder_recipe(_binary_folder(tmp_path), "data.num_labels=2", "data.check=off"))


# --- the warnings ---


def test_a_class_never_in_training_and_one_never_evaluated_are_warned(tmp_path):
    make_folder(tmp_path, "split", count=2)
    _rewrite_masks(tmp_path, lambda mask: np.minimum(mask, 1))  # class 2 nowhere
    save(tmp_path / "val" / "masks" / "img_0.png", np.zeros((24, 32), np.uint8))
    save(tmp_path / "val" / "masks" / "img_1.png", np.zeros((24, 32), np.uint8))  # class 1 only in training
    data = build_datasets(folder_recipe(tmp_path))
    assert data.warnings == [
        "class 2 'class_2' never occurs in the 2 train masks",
        "class 1 'class_1' occurs in training but never in the 2 validation masks: no IoU is measured for it",
    ]


def test_a_mostly_ignored_split_is_warned(tmp_path):
    make_folder(tmp_path, "split", count=2)
    _rewrite_masks(tmp_path, lambda mask: np.where(np.arange(32) < 20, 255, mask).astype(np.uint8))
    data = build_datasets(folder_recipe(tmp_path))
    share = "62%"  # 20 of 32 columns
    assert f"{share} of the pixels of the 2 train masks are ignored (the ignore index 255)" in data.warnings[0]
    assert f"{share} of the pixels of the 2 validation masks are ignored" in data.warnings[-1]


def test_a_clean_folder_and_the_demo_scenes_have_no_warning(tmp_path):
    assert build_datasets(folder_recipe(make_folder(tmp_path, "split", count=2))).warnings == []
    r = recipe("data.synthetic.num_train=16", "data.synthetic.num_eval=4", "data.synthetic.image_size=32")
    assert build_datasets(r).warnings == []


def _train(root, tmp_path, *overrides: str) -> dict:
    from segtune.recipe import load_recipe
    from segtune.train import train
    from tests.conftest import TINY_RUN

    settings = [*TINY_RUN, "train.max_steps=2", "train.per_device_batch_size=1", "train.reference_batch_size=1"]
    settings += ["data.source=folder", f"data.path={root}", f"train.output_dir={tmp_path / 'run'}", *overrides]
    return train(load_recipe("demo.yaml", settings))


def test_warnings_are_printed_once_the_run_is_prepared(tmp_path, caplog):
    mask = np.zeros((64, 64), np.uint8)
    mask[32:] = 1  # class 2 nowhere
    root = _folder(tmp_path / "data", mask, count=2)
    with caplog.at_level(logging.WARNING):
        _train(root, tmp_path, "data.num_labels=3")
    assert caplog.text.count("class 2 'class_2' never occurs in the 2 train masks") == 1


def test_binary_masks_stop_before_step_1_and_train_once_the_label_map_is_set(tmp_path):
    root = _binary_folder(tmp_path / "data", count=2, height=64, width=64)
    with pytest.raises(DatasetError, match=r"set data.label_map: \{255: 1\}$"):
        _train(root, tmp_path, "data.num_labels=2")
    assert not (tmp_path / "run" / "checkpoints").exists()
    results = _train(root, tmp_path, "data.num_labels=2", "data.label_map={255: 1}")
    assert (tmp_path / "run" / "checkpoints").is_dir()
    assert set(results) >= {"mean_iou"} and 0 <= results["mean_iou"] <= 1
    assert "label_map:\n    255: 1" in (tmp_path / "run" / "recipe.yaml").read_text()  # saved with the run


# --- what the quick check decodes ---


def test_quick_decodes_every_mask_up_to_500_and_a_seeded_300_beyond():
    assert sampled(500, "quick", 0).tolist() == list(range(500))
    chosen = sampled(2975, "quick", 0)
    assert len(chosen) == SAMPLE_SIZE == 300 and len(set(chosen.tolist())) == 300
    assert (np.diff(chosen) > 0).all() and chosen.max() < 2975
    assert sampled(2975, "quick", 0).tolist() == chosen.tolist() != sampled(2975, "quick", 1).tolist()
    assert sampled(2975, "full", 0).tolist() == list(range(2975))


def test_quick_decodes_the_sampled_masks_only(monkeypatch):
    decoded = []
    read_mask = preflight.read_mask
    monkeypatch.setattr(
        preflight,
        "read_mask",
        lambda value, where, colors=None: decoded.append(where) or read_mask(value, where, colors),
    )
    r = recipe(
        "data.synthetic.num_train=501",
        "data.synthetic.num_eval=3",
        "data.synthetic.image_size=16",
        "data.synthetic.num_classes=3",
    )
    build_datasets(r)
    assert len(decoded) == 300 + 3
    decoded.clear()
    build_datasets(recipe(*r_overrides(r), "data.check=full"))
    assert len(decoded) == 501 + 3


def r_overrides(r) -> list[str]:
    s = r.data.synthetic
    return [
        f"data.synthetic.num_train={s.num_train}",
        f"data.synthetic.num_eval={s.num_eval}",
        f"data.synthetic.image_size={s.image_size}",
        f"data.synthetic.num_classes={s.num_classes}",
    ]


# --- segtune data check ---


def test_data_check_prints_the_diagnosis_and_images_per_class(tmp_path):
    make_folder(tmp_path, "split", count=2)
    _rewrite_masks(tmp_path, lambda mask: np.minimum(mask, 1))
    report = check_dataset(folder_recipe(tmp_path))
    assert report.ok
    assert report.images["train"].tolist() == [2, 2, 0] and report.images["validation"].tolist() == [2, 2, 0]
    assert report.histograms["train"].tolist() == [2 * 8 * 32, 2 * 16 * 32, 0, 0]
    text = report.format()
    assert "train pixels   share  images" in text
    rows = {line.split()[0]: line.split()[1:] for line in text.splitlines()[1:5]}
    assert rows["0"] == ["class_0", "512", "33.3%", "2", "512", "33.3%", "2"]
    assert rows["2"] == ["class_2", "0", "0.0%", "0", "0", "0.0%", "0"]
    assert rows["-"] == ["(ignored:", "255)", "0", "0.0%", "0", "0.0%"]
    assert "1 warning(s):\n  class 2 'class_2' never occurs in the 2 train masks" in text


def test_data_check_names_the_fix(tmp_path):
    report = check_dataset(folder_recipe(_binary_folder(tmp_path), "data.num_labels=2"))
    assert not report.ok and len(report.problems) == 1
    assert report.problems[0].endswith("set data.label_map: {255: 1}")


# --- data.label_map in each label contract ---


def test_label_map_wins_over_the_plain_contract_and_costs_one_table():
    spec = LabelSpec({0: "a", 1: "b"}, overrides={255: 1})
    mask = np.array([[0, 255], [255, 0]], np.uint8)
    assert spec.encode(mask, "m.png").tolist() == [[0, 1], [1, 0]]
    with pytest.raises(DatasetError, match=r"m.png: mask values \[7\] .*data.label_map lists: 255"):
        spec.encode(np.array([[7]], np.uint8), "m.png")


def test_label_map_on_reduced_labels_acts_on_the_raw_values():
    spec = LabelSpec({i: str(i) for i in range(150)}, reduce_labels=True, overrides={0: 3, 5: 255})
    raw = np.array([[0, 1, 5, 6, 255]], np.uint8)
    assert spec.encode(raw, "ade.png").tolist() == [[3, 0, 255, 5, 255]]  # 1 -> 0 and 6 -> 5 still reduced


def test_label_map_on_cityscapes_ids_and_coco_stuff_ids_keeps_the_rest_of_their_table():
    city = LabelSpec({i: str(i) for i in range(19)}, label_map={7: 0, 8: 1, 26: 13}, overrides={6: 0, 26: 255})
    assert city.encode(np.array([[6, 7, 8, 26, 3]], np.uint8), "c.png").tolist() == [[0, 0, 1, 255, 255]]
    coco = LabelSpec({0: "a", 1: "b"}, label_map={0: 0, 2: 1}, strict_label_map=True, overrides={1: 255})
    assert coco.encode(np.array([[0, 1, 2]], np.uint8), "s.png").tolist() == [[0, 255, 1]]
    with pytest.raises(DatasetError, match=r"s.png: mask values \[3\]"):
        coco.encode(np.array([[3]], np.uint8), "s.png")  # strict: unlisted ids still refused


def test_label_map_to_a_class_the_source_lacks_is_refused_when_the_data_loads(tmp_path):
    make_folder(tmp_path, "split", count=1)
    (tmp_path / "id2label.json").write_text('{"0": "a", "1": "b", "2": "c"}')  # names the recipe does not know
    r = recipe("data.source=folder", f"data.path={tmp_path}", "data.label_map={9: 5}")
    with pytest.raises(
        DatasetError, match=r"data.label_map: expected class ids 0..2 or the ignore index 255.*\{9: 5\}"
    ):
        build_datasets(r)


def test_a_recipe_that_evaluates_on_its_training_split_is_checked_as_one_split(tmp_path):
    """data.eval_split == data.train_split leaves one entry in the splits `build_datasets` checks."""
    r = folder_recipe(make_folder(tmp_path, count=4))
    source = load_source(r)
    train = {"train": source.splits["train"]}
    assert preflight.preflight(train, label_spec(r.data, source), "full", False, "here") == []
