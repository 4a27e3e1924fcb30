"""The label contract: mapping, reduce_labels exactly once, ignore index, the image processor."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoImageProcessor

from segtune.data import LabelSpec, build_datasets, build_image_processor, load_source
from segtune.data.labels import default_palette
from segtune.errors import DatasetError
from tests.data_fixtures import hub_dataset, isolated_datasets_cache, recipe  # noqa: F401 (fixture)


def spec(n: int = 3, **kwargs) -> LabelSpec:
    return LabelSpec(id2label={i: f"c{i}" for i in range(n)}, **kwargs)


def test_identity_keeps_class_ids_and_ignore():
    raw = np.array([[0, 1, 2], [255, 2, 0]], dtype=np.uint8)
    encoded = spec().encode(raw, "m.png")
    assert encoded.dtype == torch.uint8
    assert encoded.tolist() == raw.tolist()


def test_reduce_labels_maps_zero_to_ignore_and_shifts_once():
    raw = np.array([[0, 1, 2, 3, 255]], dtype=np.uint8)
    assert spec(reduce_labels=True).encode(raw, "m.png").tolist() == [[255, 0, 1, 2, 255]]


def test_label_map_maps_listed_ids_and_ignores_the_rest():
    labels = spec(label_map={7: 0, 26: 2, 8: 1})
    raw = np.array([[7, 26, 8, 0, 1, 200]], dtype=np.uint8)
    assert labels.encode(raw, "m.png").tolist() == [[0, 2, 1, 255, 255, 255]]


@pytest.mark.parametrize("ignore_index", [-1, -100])
def test_a_negative_ignore_index_is_not_mistaken_for_an_invalid_value(ignore_index):
    """Unlisted ids under a label map, and the values a recipe maps to the ignore index, are ignored, not invalid."""
    raw = np.array([[7, 26, 0, 200, 255]], dtype=np.uint8)
    labels = spec(label_map={7: 0, 26: 2}, ignore_index=ignore_index, overrides={255: ignore_index})
    assert labels.encode(raw, "m.png").tolist() == [[0, 2, ignore_index, ignore_index, ignore_index]]
    assert labels.class_counts(raw, "m.png").tolist() == [1, 0, 1, 3]


def test_sixteen_bit_masks_are_class_ids():
    raw = np.array([[0, 1, 2, 255]], dtype=np.uint16)
    assert spec().encode(raw, "m.png").tolist() == [[0, 1, 2, 255]]


def test_out_of_range_values_are_listed_with_the_file():
    raw = np.array([[0, 1, 7, 9, 255, 7]], dtype=np.uint8)
    with pytest.raises(
        DatasetError, match=r"m\.png: mask values \[7, 9\] are outside \[0, 3\) and not the ignore index 255"
    ):
        spec().encode(raw, "m.png")
    with pytest.raises(DatasetError, match=r"values \[300\]"):
        spec().encode(np.array([[1, 300]], dtype=np.uint16), "m.png")


def test_reduce_labels_accepts_n_and_refuses_above():
    labels = spec(reduce_labels=True)
    assert labels.encode(np.array([[3]], dtype=np.uint8), "m").tolist() == [[2]]
    with pytest.raises(DatasetError, match=r"values \[4\].*after reduce_labels"):
        labels.encode(np.array([[4]], dtype=np.uint8), "m")


def test_ignore_index_cannot_be_a_class():
    with pytest.raises(DatasetError, match="data.ignore_index 2 is a class id"):
        spec(3, ignore_index=2)


def test_non_byte_ignore_index_gives_int16_masks():
    labels = spec(ignore_index=-100)
    assert labels.mask_dtype == torch.int16
    assert labels.encode(np.array([[0, 2]], dtype=np.uint8), "m").tolist() == [[0, 2]]
    assert labels.encode(np.array([[0, 2]], dtype=np.uint8), "m").dtype == torch.int16


def test_class_counts_histogram_has_ignored_last():
    raw = np.array([[0, 0, 1, 255]], dtype=np.uint8)
    assert spec().class_counts(raw, "m").tolist() == [2, 1, 0, 1]


def test_class_pixels_maps_raw_regions():
    labels = spec(label_map={7: 0, 26: 1})
    raw = torch.tensor([[7, 7, 26, 0]], dtype=torch.uint8)
    assert labels.class_pixels(raw).tolist() == [2.0, 1.0, 0.0]


def test_default_palette_is_distinct():
    palette = default_palette(21)
    assert len(set(palette)) == 21 and palette[:3] == ((0, 0, 0), (128, 0, 0), (0, 128, 0))


def test_processor_never_reduces_labels():
    processor = build_image_processor(recipe("data.reduce_labels=true"))
    assert processor.do_reduce_labels is False
    encoded = spec(reduce_labels=True).encode(np.array([[0, 1, 2, 3]], dtype=np.uint8), "m")
    image = torch.zeros(3, 1, 4, dtype=torch.uint8)
    out = processor(images=image, segmentation_maps=encoded[None], return_tensors="pt")
    assert out["labels"][0].tolist() == [[255, 0, 1, 2]]  # unchanged by the processor


@pytest.mark.parametrize("reduce_in_recipe", [False, True])
def test_dataset_reduces_ade_style_labels_exactly_once(tmp_path, reduce_in_recipe):
    hub_dataset(reduce=True).save_to_disk(str(tmp_path / "ade"))
    overrides = ["data.source=ade20k", f"data.path={tmp_path / 'ade'}", f"data.reduce_labels={reduce_in_recipe}"]
    r = recipe(*overrides, "augment.photometric=false")
    data = build_datasets(r)
    assert data.labels.num_labels == 150 and data.labels.reduce_labels
    stored = load_source(r).splits["validation"][0]["label"]
    expected = np.asarray(stored).astype(np.int64) - 1  # files hold 1..3 for classes 0..2
    assert data.eval[0]["labels"].tolist() == expected.tolist()
    train_labels = data.train[0]["labels"]
    assert set(train_labels.unique().tolist()) <= {0, 1, 2, 255}


def test_eval_resize_keeps_aspect_ratio_and_processor_round_trips(tmp_path):
    r = recipe("eval.resize=[64,16]")
    processor = build_image_processor(r)
    assert processor.size["shortest_edge"] == 16 and processor.size["longest_edge"] == 64
    image = torch.randint(0, 256, (3, 24, 32), dtype=torch.uint8)
    pixel_values = processor(images=image, return_tensors="pt")["pixel_values"]
    assert pixel_values.shape == (1, 3, 16, 21)  # short side 16, ratio kept
    processor.save_pretrained(tmp_path)
    reloaded = AutoImageProcessor.from_pretrained(tmp_path)
    assert torch.equal(reloaded(images=image, return_tensors="pt")["pixel_values"], pixel_values)
    assert reloaded.do_reduce_labels is False


def test_no_eval_resize_means_native_size():
    processor = build_image_processor(recipe())
    assert processor.do_resize is False
    image = torch.randint(0, 256, (3, 24, 32), dtype=torch.uint8)
    pixel_values = processor(images=image, return_tensors="pt")["pixel_values"]
    assert pixel_values.shape == (1, 3, 24, 32)
    mean, std = torch.tensor(processor.image_mean)[:, None, None], torch.tensor(processor.image_std)[:, None, None]
    assert torch.allclose(pixel_values[0], (image / 255 - mean) / std, atol=1e-5)
