"""The source registry, the official ADE20K and COCO-Stuff-164k folders, and loading-script datasets refused offline."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import numpy as np
import PIL.Image
import pytest

from segtune.data import LabelSpec, build_datasets, load_source, sources
from segtune.data.sources.ade20k import CLASSES as ADE_CLASSES
from segtune.data.sources.coco_stuff import CLASSES as COCO_CLASSES
from segtune.data.sources.coco_stuff import PALETTE as COCO_PALETTE
from segtune.data.sources.coco_stuff import RAW_TO_TRAIN, UNUSED_IDS
from segtune.errors import DatasetError, RecipeError
from segtune.recipe import load_recipe
from tests.data_fixtures import (
    TINY_AUGMENT,
    hub_dataset,
    isolated_datasets_cache,  # noqa: F401 (autouse fixture)
    recipe,
    save,
    scene,
    write_parquet,
)
from tests.official_fixtures import COCO_UNUSED, COCO_USED, make_ade20k, make_coco_stuff

ADE_ZIP = "http://data.csail.mit.edu/places/ADEchallenge/ADEChallengeData2016.zip"


@pytest.fixture
def offline(monkeypatch):
    """No network: HF_HUB_OFFLINE set, and `datasets.load_dataset` refused for anything but local files."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    real = datasets.load_dataset

    def local_only(path, *args, **kwargs):
        if not Path(path).exists() and path not in ("parquet", "csv", "json"):
            raise AssertionError(f"load_dataset({path!r}) would reach the Hub")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(datasets, "load_dataset", local_only)


def files(split: datasets.Dataset, column: str) -> list[str]:
    return [v["path"] for v in split.cast_column(column, datasets.Image(decode=False))[column]]


# --- the registry --------------------------------------------------------------------------------


def test_recipe_validation_reads_the_registry():
    assert set(sources.SOURCES) == {
        "synthetic",
        "folder",
        "cityscapes",
        "hub",
        "ade20k",
        "coco_stuff",
        "coco",
        "labelme",
        "yolo",
        "voc",
    }
    with pytest.raises(RecipeError, match=r"data.source: expected one of \[.*'coco_stuff', 'coco'.*\], found 'pascal'"):
        load_recipe(None, ["data.source=pascal"])
    for source in ("folder", "cityscapes", "hub"):  # no default path
        with pytest.raises(RecipeError, match=rf"data.path: expected a path .* for data.source='{source}'"):
            load_recipe(None, [f"data.source={source}"])
    for source in ("ade20k", "coco_stuff", "synthetic"):  # a default path, or none needed
        assert load_recipe(None, [f"data.source={source}"]).data.path is None


def test_data_check_is_a_validated_choice():
    assert load_recipe(None).data.check == "quick"
    assert load_recipe(None, ["data.check=off"]).data.check == "off"  # YAML reads `off` as false
    assert load_recipe(None, ["data.check=full"]).data.check == "full"
    with pytest.raises(RecipeError, match=r"data.check: expected one of \['full', 'quick', 'off'\], found 'some'"):
        load_recipe(None, ["data.check=some"])


def test_recipe_file_with_check_off_round_trips(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("data:\n  check: off\n")
    loaded = load_recipe(path)
    assert loaded.data.check == "off"
    loaded.save(tmp_path / "again.yaml")
    assert load_recipe(tmp_path / "again.yaml").data.check == "off"


def test_every_loader_takes_data_and_seed():
    for name, loader in sources.SOURCES.items():
        module, function = loader.split(":")
        loader = getattr(__import__(f"segtune.data.sources.{module}", fromlist=[function]), function)
        assert list(loader.__code__.co_varnames[:2]) == ["data", "seed"], name


# --- ADE20K --------------------------------------------------------------------------------------


def test_ade20k_official_folder_loads_with_the_shipped_recipe(tmp_path):
    root = make_ade20k(tmp_path, per_split=2)
    r = load_recipe("ade20k.yaml", [f"data.path={root}", *TINY_AUGMENT, "eval.resize="])
    assert (r.data.train_split, r.data.eval_split) == ("train", "validation")
    data, source = build_datasets(r), load_source(r)
    assert data.labels.num_labels == 150 and data.labels.id2label[0] == "wall" and data.labels.reduce_labels
    assert data.labels.palette[0] == (120, 120, 120)
    assert [Path(p).name for p in files(source.splits["train"], "image")] == [
        "ADE_train_00000001.jpg",
        "ADE_train_00000002.jpg",
    ]
    masks = files(source.splits["validation"], "label")
    assert all("/annotations/validation/ADE_val_" in p for p in masks)
    for index, mask_path in enumerate(masks):
        annotation = np.asarray(PIL.Image.open(mask_path)).astype(np.int64)
        assert set(np.unique(annotation)) == set(range(151))
        expected = np.where(annotation == 0, 255, annotation - 1)  # reduce_labels, once
        item = data.eval[index]
        assert item["labels"].shape == annotation.shape  # native resolution
        assert item["labels"].tolist() == expected.tolist()
    assert set(data.train[0]["labels"].unique().tolist()) <= set(range(150)) | {255}


def test_ade20k_training_split_name_and_default_path(tmp_path, monkeypatch):
    make_ade20k(tmp_path / "data", per_split=1)
    monkeypatch.chdir(tmp_path)  # the default path data/ADEChallengeData2016 is relative
    r = recipe("data.source=ade20k", "data.train_split=training")
    data = build_datasets(r)
    assert load_source(r).name == "data/ADEChallengeData2016"
    assert (len(data.train), len(data.eval)) == (1, 1)


def test_ade20k_missing_default_folder_says_where_to_download_it(tmp_path, monkeypatch, offline):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(
        DatasetError, match=rf"'data/ADEChallengeData2016': ADE20K folder not found. Download {ADE_ZIP}"
    ):
        build_datasets(load_recipe("ade20k.yaml"))
    with pytest.raises(DatasetError, match="ADE20K folder not found"):
        build_datasets(recipe("data.source=ade20k", f"data.path={tmp_path / 'elsewhere' / 'ADE'}"))


def test_ade20k_parent_of_the_unzipped_folder_is_named(tmp_path):
    make_ade20k(tmp_path)
    with pytest.raises(
        DatasetError, match=r"holds the unzipped ADE20K folder: set data.path to .*ADEChallengeData2016"
    ):
        build_datasets(recipe("data.source=ade20k", f"data.path={tmp_path}"))


def test_ade20k_unpaired_files_are_reported_or_skipped(tmp_path):
    root = make_ade20k(tmp_path, per_split=2)
    (root / "annotations" / "training" / "ADE_train_00000002.png").unlink()
    save(root / "annotations" / "validation" / "ADE_val_00000009.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(DatasetError) as error:
        build_datasets(recipe("data.source=ade20k", f"data.path={root}"))
    message = str(error.value)
    assert "2 problem(s)" in message
    assert (
        "image 'images/training/ADE_train_00000002.jpg' has no mask 'annotations/training/ADE_train_00000002.png'"
        in message
    )
    assert (
        "mask 'annotations/validation/ADE_val_00000009.png' has no image 'images/validation/ADE_val_00000009.jpg'"
        in message
    )
    data = build_datasets(recipe("data.source=ade20k", f"data.path={root}", "data.skip_invalid=true"))
    assert (len(data.train), len(data.eval), data.skipped.count) == (1, 2, 2)


def test_ade20k_unknown_split_name(tmp_path):
    root = make_ade20k(tmp_path)
    with pytest.raises(DatasetError, match=r"split 'test' .* has no folder; expected one of \['train', 'training'"):
        build_datasets(recipe("data.source=ade20k", f"data.path={root}", "data.eval_split=test"))


def test_ade20k_parquet_copy_with_annotation_column(tmp_path):
    """A Parquet copy of scene_parse_150 (image / annotation columns, values 1..150) takes the hub path."""
    write_parquet(hub_dataset(label_column="annotation", reduce=True), tmp_path / "pq")
    r = recipe("data.source=ade20k", f"data.path={tmp_path / 'pq'}")
    data, source = build_datasets(r), load_source(r)
    assert data.labels.num_labels == 150 and source.splits["train"].column_names == ["image", "label"]
    raw = np.asarray(source.splits["validation"][0]["label"]).astype(np.int64)
    assert data.eval[0]["labels"].tolist() == (raw - 1).tolist()


@pytest.mark.slow  # builds a 150-class B0 and runs two steps and an evaluation (~10 s on 2 cores)
def test_ade20k_trains_end_to_end(tmp_path):
    from segtune.train import train

    root = make_ade20k(tmp_path / "data", per_split=2)
    out = tmp_path / "run"
    overrides = [
        f"data.path={root}",
        "model.init=random",
        *TINY_AUGMENT,
        "eval.resize=",
        "train.max_steps=2",
        "train.per_device_batch_size=2",
        "train.reference_batch_size=2",
        "train.eval_steps=2",
        "train.save_steps=2",
        "train.logging_steps=1",
        "optim.warmup_steps=1",
        "data.num_workers=0",
        "logging.report_to=[none]",
        "eval.num_visualizations=1",
        f"train.output_dir={out}",
    ]
    results = train(load_recipe("ade20k.yaml", overrides))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["step"] == 2 and len(metrics["per_category_iou"]) == 150
    assert metrics["per_category_iou_by_name"].keys() >= {"wall", "flag"}
    labelled = sum(
        int((np.asarray(PIL.Image.open(p)) > 0).sum()) for p in (root / "annotations" / "validation").glob("*.png")
    )
    assert results["confusion_matrix"].sum() == labelled  # every labelled pixel, at native size; "other" ignored
    assert ADE_CLASSES[-1] == "flag"


# --- COCO-Stuff-164k -----------------------------------------------------------------------------


def test_coco_stuff_table_is_the_171_used_ids_in_order():
    assert UNUSED_IDS == (11, 25, 28, 29, 44, 65, 67, 68, 70, 82, 90) and set(UNUSED_IDS) == COCO_UNUSED
    mapped = [raw for raw in RAW_TO_TRAIN if raw != 255]
    assert mapped == sorted(mapped) == COCO_USED and len(mapped) == 171
    assert [RAW_TO_TRAIN[raw] for raw in mapped] == list(range(171))
    assert not COCO_UNUSED & RAW_TO_TRAIN.keys() and RAW_TO_TRAIN[255] == 255
    assert len(COCO_CLASSES) == len(COCO_PALETTE) == 171
    assert (COCO_CLASSES[0], COCO_CLASSES[79], COCO_CLASSES[80], COCO_CLASSES[-1]) == (
        "person",
        "toothbrush",
        "banner",
        "wood",
    )


@pytest.mark.parametrize("train_ids", [False, True])
def test_coco_stuff_raw_and_converted_trees_give_the_same_labels(tmp_path, train_ids):
    root = make_coco_stuff(tmp_path, per_split=2, train_ids=train_ids)
    r = load_recipe("coco_stuff.yaml", [f"data.path={root}", *TINY_AUGMENT, "eval.resize="])
    data, source = build_datasets(r), load_source(r)
    assert data.labels.num_labels == 171 and data.labels.id2label[170] == "wood"
    masks = files(source.splits["validation"], "label")
    assert all(p.endswith("_labelTrainIds.png") == train_ids for p in masks)
    assert (source.label_map is None) == train_ids
    position = {raw_id: i for i, raw_id in enumerate(COCO_USED)} | {255: 255}
    for index, mask_path in enumerate(masks):
        raw = np.asarray(PIL.Image.open(mask_path.replace("_labelTrainIds.png", ".png"))).astype(np.int64)
        expected = np.vectorize(position.get)(raw)
        labels = data.eval[index]["labels"]
        assert labels.shape == raw.shape and labels.tolist() == expected.tolist()
        assert set(labels.unique().tolist()) == set(range(171)) | {255}


@pytest.mark.parametrize("bad_value", [11, 90, 200])
def test_coco_stuff_unused_id_is_an_out_of_range_label(tmp_path, bad_value):
    root = make_coco_stuff(tmp_path, per_split=2)
    mask_path = root / "annotations" / "val2017" / "000000000901.png"
    mask = np.asarray(PIL.Image.open(mask_path)).copy()
    mask[0, 0] = bad_value
    save(mask_path, mask)
    message = rf"000000000901.png'\): mask values \[{bad_value}\] are out of range: the label map has no train id"
    with pytest.raises(DatasetError, match=message + r".*0-10, 12-24, 26-27, 30-43, .*, 91-181, 255"):
        build_datasets(recipe("data.source=coco_stuff", f"data.path={root}", "data.check=full"))
    data = build_datasets(recipe("data.source=coco_stuff", f"data.path={root}", "data.check=off"))
    with pytest.raises(DatasetError, match=r"validation sample 1: mask \('.*/val2017/" + message):
        data.eval[1]


def test_strict_label_map_refuses_what_it_does_not_list():
    loose = LabelSpec(id2label={0: "a", 1: "b"}, label_map={3: 0, 5: 1})
    strict = LabelSpec(id2label={0: "a", 1: "b"}, label_map={3: 0, 5: 1, 255: 255}, strict_label_map=True)
    raw = np.array([[3, 5, 255, 4]], dtype=np.uint8)
    assert loose.encode(raw, "m.png").tolist() == [[0, 1, 255, 255]]
    with pytest.raises(DatasetError, match=r"m.png: mask values \[4\] are out of range.*lists: 3, 5, 255"):
        strict.encode(raw, "m.png")
    assert strict.encode(raw[:, :3], "m.png").tolist() == [[0, 1, 255]]


def test_coco_stuff_missing_folder_says_where_to_download(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(
        DatasetError, match=r"'data/coco_stuff164k': COCO-Stuff-164k folder .*/stuffthingmaps_trainval2017.zip"
    ):
        build_datasets(recipe("data.source=coco_stuff"))


def test_coco_stuff_recipe_is_the_paper_setting():
    r = load_recipe("coco_stuff.yaml")
    assert (r.data.source, r.data.path, r.data.train_split, r.data.eval_split) == (
        "coco_stuff",
        "data/coco_stuff164k",
        "train",
        "validation",
    )
    assert r.augment.crop_size == (512, 512) and r.augment.scale == (2048, 512)
    assert (r.train.max_steps, r.train.reference_batch_size) == (80_000, 16)
    assert (r.eval.mode, r.eval.resize) == ("whole", (2048, 512)) and not r.data.reduce_labels


# --- loading-script datasets ---------------------------------------------------------------------


@pytest.mark.parametrize("source", ["hub", "ade20k"])
@pytest.mark.parametrize("path", ["scene_parse_150", "zhoubolei/scene_parse_150"])
def test_scene_parse_150_points_to_the_official_folder_offline(offline, source, path):
    with pytest.raises(DatasetError) as error:
        build_datasets(recipe(f"data.source={source}", f"data.path={path}", "data.num_labels=150"))
    message = str(error.value)
    assert f"data.path '{path}' is a dataset loading script (scene_parse_150.py)" in message
    assert "datasets >= 4 no longer runs loading scripts" in message
    assert ADE_ZIP in message and "data.source: ade20k" in message


def test_local_folder_with_a_loading_script_is_refused_before_datasets(tmp_path, offline):
    folder = tmp_path / "my_dataset"
    folder.mkdir()
    (folder / "my_loader.py").write_text("import datasets\n")
    (folder / "README.md").write_text("# a dataset\n")
    (folder / "dataset_infos.json").write_text("{}")
    with pytest.raises(DatasetError) as error:
        build_datasets(recipe("data.source=hub", f"data.path={folder}", "data.num_labels=3"))
    message = str(error.value)
    assert f"data.path '{folder}' is a dataset loading script (my_loader.py)" in message
    assert "Parquet" in message and "save_to_disk" in message


def test_datasets_own_script_error_is_translated(tmp_path, offline):
    folder = tmp_path / "street"  # datasets refuses <folder>/<folder>.py even beside data files
    folder.mkdir()
    (folder / "street.py").write_text("import datasets\n")
    (folder / "labels.csv").write_text("a,b\n1,2\n")
    with pytest.raises(DatasetError, match=r"'.*street' is a dataset loading script \(street.py\).*Parquet"):
        build_datasets(recipe("data.source=hub", f"data.path={folder}", "data.num_labels=3"))


def test_folder_of_data_files_beside_a_script_still_loads(tmp_path, offline):
    write_parquet(hub_dataset(), tmp_path / "pq", id2label={0: "a", 1: "b", 2: "c"})
    (tmp_path / "pq" / "convert.py").write_text("# how the parquet files were made\n")
    data = build_datasets(recipe("data.source=hub", f"data.path={tmp_path / 'pq'}"))
    assert data.labels.id2label == {0: "a", 1: "b", 2: "c"}


def test_folder_source_is_unaffected_by_scripts(tmp_path):
    for split in ("train", "val"):
        image, mask = scene(0)
        save(tmp_path / split / "images" / "a.png", image)
        save(tmp_path / split / "masks" / "a.png", mask)
    (tmp_path / "make_masks.py").write_text("")
    source = load_source(recipe("data.source=folder", f"data.path={tmp_path}", "data.num_labels=3"))
    assert len(source.splits["train"]) == 1
