"""A split held out by `data.val_ratio` validates every class in >= 3 images (iterative stratification)."""

from __future__ import annotations

import datasets
import numpy as np
import pytest

import segtune.data.class_pixels as class_pixels_module
from segtune.data import build_datasets, load_source
from segtune.data.sources.base import held_out_size, seeded_split, undecoded
from segtune.data.stratify import stratified_split
from tests.data_fixtures import (
    folder_recipe,
    isolated_datasets_cache,  # noqa: F401 (autouse fixture)
    save,
)

# Ten images, all with background (0); class 1 only in images 0-2, class 2 only in images 6-8.
RARE = {1: (0, 1, 2), 2: (6, 7, 8)}
COUNT, RATIO = 10, 0.2


def rare_folder(root, rare: dict[int, tuple[int, ...]] = RARE) -> None:
    """A flat folder of 8x8 images whose masks hold background and, for a few images, one rare class."""
    for i in range(COUNT):
        mask = np.zeros((8, 8), np.uint8)
        for label, images in rare.items():
            if i in images:
                mask[:2] = label
        save(root / "images" / f"img_{i:02d}.png", np.full((8, 8, 3), 20 * i, np.uint8))
        save(root / "masks" / f"img_{i:02d}.png", mask)


def flat_recipe(root, *overrides: str):
    return folder_recipe(root, f"data.val_ratio={RATIO}", *overrides)


def eval_names(source) -> list[str]:
    return [row["path"].rsplit("/", 1)[-1] for row in undecoded(source.splits["validation"])["image"]]


def classes_in(split: datasets.Dataset) -> set[int]:
    return {int(v) for row in split for v in np.unique(np.asarray(row["label"]))}


def test_the_random_draw_misses_a_rare_class_the_stratified_split_does_not(tmp_path):
    rare_folder(tmp_path)
    _, random_eval = seeded_split(COUNT, RATIO, seed=0)  # what data.val_ratio held out before
    random_classes = {0} | {label for label, images in RARE.items() if set(images) & set(random_eval)}
    assert random_classes != {0, 1, 2}  # a class in 3 images goes unvalidated: NaN IoU
    data = build_datasets(flat_recipe(tmp_path, "train.seed=0"))
    validated = {int(v) for i in range(len(data.eval)) for v in data.eval[i]["labels"].unique()}
    assert validated == {0, 1, 2}
    assert len(data.eval) == held_out_size(COUNT, RATIO) == round(COUNT * RATIO)


def test_stratify_false_keeps_the_random_draw(tmp_path):
    rare_folder(tmp_path)
    _, random_eval = seeded_split(COUNT, RATIO, seed=0)
    source = load_source(flat_recipe(tmp_path, "data.stratify=false"))
    assert eval_names(source) == [f"img_{i:02d}.png" for i in random_eval]
    assert source.split_summary is None  # no mask decoded for it


def test_the_split_is_seeded_and_a_partition(tmp_path):
    rare_folder(tmp_path)
    splits = {seed: load_source(flat_recipe(tmp_path, f"train.seed={seed}")).splits for seed in range(4)}
    again = load_source(flat_recipe(tmp_path, "train.seed=0")).splits
    assert undecoded(again["validation"])["image"] == undecoded(splits[0]["validation"])["image"]
    assert len({tuple(r["path"] for r in undecoded(s["validation"])["image"]) for s in splits.values()}) > 1
    for split in splits.values():
        train = [r["path"] for r in undecoded(split["train"])["image"]]
        held = [r["path"] for r in undecoded(split["validation"])["image"]]
        assert not set(train) & set(held) and len(train) + len(held) == COUNT == len(set(train) | set(held))
        assert train == sorted(train) and held == sorted(held)  # each side keeps the files' order
        assert classes_in(split["validation"]) == {0, 1, 2}


def test_images_per_class_are_printed_once(tmp_path, capsys):
    rare_folder(tmp_path)
    build_datasets(flat_recipe(tmp_path))
    out = capsys.readouterr().out
    assert out.count("held out 2 of 10 images, stratified") == 1
    lines = [line.split() for line in out.splitlines() if line.startswith("  class_")]
    assert lines == [
        ["class_0", "train", "8", "validation", "2"],
        ["class_1", "train", "2", "validation", "1"],
        ["class_2", "train", "2", "validation", "1"],
    ]


def test_masks_are_decoded_once_per_fingerprint(tmp_path, monkeypatch):
    rare_folder(tmp_path)
    first = eval_names(load_source(flat_recipe(tmp_path)))

    def no_decoding(*args, **kwargs):
        raise AssertionError("masks decoded again")

    monkeypatch.setattr(class_pixels_module, "scan", no_decoding)
    assert eval_names(load_source(flat_recipe(tmp_path))) == first  # class sets read from the cache
    save(tmp_path / "masks" / "img_03.png", np.full((8, 8), 2, np.uint8))  # another mask: another fingerprint
    with pytest.raises(AssertionError, match="decoded again"):
        load_source(flat_recipe(tmp_path))


def test_a_hub_dataset_without_an_eval_split_is_stratified_too(tmp_path):
    masks = [np.zeros((8, 8), np.uint8) for _ in range(COUNT)]
    for label, images in RARE.items():
        for i in images:
            masks[i][:2] = label
    train = datasets.Dataset.from_dict(
        {"image": [np.full((8, 8, 3), i, np.uint8) for i in range(COUNT)], "label": masks},
        features=datasets.Features({"image": datasets.Image(), "label": datasets.Image()}),
    )
    datasets.DatasetDict(train=train).save_to_disk(str(tmp_path / "d"))
    r = flat_recipe(tmp_path / "d", "data.source=hub")
    splits = load_source(r).splits
    assert (len(splits["train"]), len(splits["validation"])) == (8, 2)
    assert classes_in(splits["validation"]) == {0, 1, 2}


@pytest.mark.parametrize("seed", range(5))
def test_every_class_in_three_or_more_images_is_held_out(seed):
    """Many rare classes, 200 images, 10% held out: a random draw misses some, the stratified split none."""
    rng = np.random.default_rng(100 + seed)
    present = rng.random((200, 40)) < np.linspace(0.015, 0.5, 40)  # (images, classes), rare to common
    n_eval = held_out_size(200, 0.1)
    train, held = stratified_split(present, n_eval, seed)
    assert len(held) == n_eval and sorted(train + held) == list(range(200))
    frequent = present.sum(0) >= 3
    assert present[held].any(0)[frequent].all()
    assert (present[held].sum(0) <= present.sum(0)).all()
    _, random_held = seeded_split(200, 0.1, seed)
    assert not present[random_held].any(0)[frequent].all()
    assert stratified_split(present, n_eval, seed) == (train, held)


def test_rare_classes_beyond_the_held_out_size_are_named(tmp_path, caplog):
    """Three rare classes in disjoint images, one image held out: two classes cannot be validated, and are named."""
    rare_folder(tmp_path, {1: (0, 1, 2), 2: (3, 4, 5), 3: (6, 7, 8)})
    r = folder_recipe(tmp_path, "data.val_ratio=0.1", "data.num_labels=4")
    splits = load_source(r).splits
    assert len(splits["validation"]) == 1 and len(classes_in(splits["validation"]) - {0}) == 1
    warned = [m for m in caplog.messages if "but not in validation" in m]
    assert len(warned) == 1 and sum(f"class_{c}" in warned[0] for c in (1, 2, 3)) == 2
