"""segtune.metrics: confusion matrices, MeanIoU parity with evaluate's mean_iou, streaming, errors."""

import evaluate
import numpy as np
import pytest
import torch
from PIL import Image

from segtune.metrics import (
    MeanIoU,
    MetricError,
    confusion,
    confusion_matrix,
    metrics_from_confusion,
    per_class_table,
    per_sample_confusion,
)

from .mean_iou_reference import reference_mean_iou

KEYS = ["mean_iou", "mean_accuracy", "overall_accuracy", "per_category_iou", "per_category_accuracy"]

# The example in evaluate's mean_iou documentation, with the results it documents.
DOC_PREDICTIONS = [
    np.array([[1, 2], [3, 4], [5, 255]]),
    np.array([[2, 7], [9, 2], [3, 6]]),
    np.array([[2, 2, 3], [8, 2, 4], [3, 255, 2]]),
]
DOC_REFERENCES = [
    np.array([[0, 3], [5, 4], [6, 255]]),
    np.array([[1, 7], [9, 2], [3, 6]]),
    np.array([[1, 2, 2], [8, 2, 1], [3, 255, 1]]),
]
DOC_RESULTS = {
    "mean_iou": 0.47750000000000004,
    "mean_accuracy": 0.5916666666666666,
    "overall_accuracy": 0.5263157894736842,
    "per_category_iou": [0.0, 0.0, 0.375, 0.4, 0.5, 0.0, 0.5, 1.0, 1.0, 1.0],
    "per_category_accuracy": [0.0, 0.0, 0.75, 2 / 3, 1.0, 0.0, 0.5, 1.0, 1.0, 1.0],
}


def assert_same_results(ours: dict, expected: dict) -> None:
    """Same keys in order, float scalars, per-class arrays of shape (K,); equal bit for bit (NaN == NaN)."""
    assert list(ours) == list(expected) == KEYS
    for key in KEYS[:3]:
        assert isinstance(ours[key], float), key
    for key in KEYS[3:]:
        assert isinstance(ours[key], np.ndarray) and ours[key].shape == expected[key].shape, key
    for key in KEYS:
        np.testing.assert_array_equal(ours[key], expected[key], err_msg=key)


def random_case(seed: int, remap: bool = True, min_maps: int = 0) -> dict:
    """Maps of random sizes and dtypes with ignore pixels, absent classes and values outside [0, K)."""
    rng = np.random.default_rng(seed)
    num_labels = int(rng.integers(1, 12))
    dtype = rng.choice([np.uint8, np.int16, np.int32, np.int64])
    low = 0 if dtype == np.uint8 else -2
    ignore_index = [255, 0, -1, None][rng.integers(4)]
    present = rng.choice(np.arange(low, num_labels + 3), size=int(rng.integers(1, num_labels + 5)))
    predictions, references = [], []
    for _ in range(int(rng.integers(min_maps, 5))):
        shape = tuple(int(n) for n in rng.integers(1, 24, size=2))
        reference = rng.choice(present, size=shape).astype(dtype)
        if ignore_index is not None and np.can_cast(np.min_scalar_type(ignore_index), dtype):
            reference[rng.random(shape) < 0.2] = ignore_index
        noise = rng.choice(present if rng.random() < 0.5 else np.arange(low, num_labels + 3), size=shape)
        prediction = np.where(rng.random(shape) < 0.5, reference.astype(np.int64), noise)
        predictions.append(prediction.astype(rng.choice([np.int64, dtype])))
        references.append(reference)
    label_map = None
    if remap and rng.random() < 0.3:
        label_map = {int(old): int(rng.integers(0, num_labels + 2)) for old in rng.choice(present, size=3)}
    return {
        "predictions": predictions,
        "references": references,
        "num_labels": num_labels,
        "ignore_index": ignore_index,
        "nan_to_num": [None, None, 0, -1.0, 0.5][rng.integers(5)],
        "label_map": label_map,
        "reduce_labels": bool(rng.random() < 0.3),
    }


# Values far outside the classes, per dtype: uint16-style ignore values, dataset ids, int32/int64 extremes.
WIDE_VALUES = {
    np.uint8: [200, 255],
    np.int16: [-300, 300, 32767],
    np.int32: [-100, 1000, 65535, 2**31 - 1],
    np.int64: [-100, 65535, 2**40, -(2**40)],
}
SETTINGS = ["num_labels", "ignore_index", "nan_to_num", "label_map", "reduce_labels"]


def wide_case(seed: int) -> dict:
    """A `random_case` with values far outside the classes in both maps, and an ignore index that may be one of
    them, a class, or a value outside the classes (255, -1, None)."""
    case = random_case(seed, min_maps=1)
    rng = np.random.default_rng(seed + 1000)
    for maps in (case["references"], case["predictions"]):
        for values in maps:
            far = rng.random(values.shape) < 0.1
            values[far] = rng.choice(WIDE_VALUES[values.dtype.type], size=int(far.sum()))
    choice = rng.integers(3)
    if choice == 1:
        case["ignore_index"] = int(rng.integers(case["num_labels"]))
    elif choice == 2:
        case["ignore_index"] = int(rng.choice(WIDE_VALUES[case["references"][0].dtype.type]))
    return case


def add_in_batches(metric: MeanIoU, predictions: list, references: list, size: int = 2) -> None:
    """evaluate's loop: add_batch over batches of maps (sizes differ within a batch)."""
    for start in range(0, len(predictions), size):
        metric.add_batch(predictions=predictions[start : start + size], references=references[start : start + size])


# --- parity with evaluate's mean_iou -------------------------------------------------------------


def test_documented_example_gives_documented_results():
    ours = MeanIoU().compute(
        predictions=DOC_PREDICTIONS, references=DOC_REFERENCES, num_labels=10, ignore_index=255, reduce_labels=False
    )
    oracle = reference_mean_iou(DOC_PREDICTIONS, DOC_REFERENCES, num_labels=10, ignore_index=255)
    expected = {key: np.asarray(value, dtype=np.float64) for key, value in DOC_RESULTS.items()}
    for results in (ours, oracle):
        for key in KEYS:
            np.testing.assert_allclose(results[key], expected[key], rtol=0, atol=1e-15, err_msg=key)
    assert_same_results(ours, oracle)


@pytest.mark.parametrize("seed", range(60))
def test_compute_matches_reference_on_random_maps(seed):
    case = random_case(seed)
    assert_same_results(MeanIoU().compute(**case), reference_mean_iou(**case))


@pytest.mark.parametrize("seed", range(30))
def test_streaming_update_matches_reference(seed):
    case = random_case(seed, remap=False, min_maps=1)
    metric = MeanIoU(case["num_labels"], case["ignore_index"], case["reduce_labels"])
    maps = list(zip(case["predictions"], case["references"]))
    for start in range(0, len(maps), 2):  # batches of up to two maps of different sizes
        chunk = maps[start : start + 2]
        metric.update([torch.from_numpy(p) for p, _ in chunk], [torch.from_numpy(r) for _, r in chunk])
    expected = reference_mean_iou(**case)
    assert_same_results(metric.compute(nan_to_num=case["nan_to_num"]), expected)


@pytest.mark.parametrize("seed", range(30))
def test_per_sample_matrices_added_match_reference(seed):
    case = random_case(seed, remap=False, min_maps=1)
    case["reduce_labels"] = False  # add_confusion adds counts as they are; reduce_labels belongs to update()
    metric = MeanIoU(case["num_labels"], case["ignore_index"])
    matrices = per_sample_confusion(
        case["predictions"], case["references"], case["num_labels"], ignore_index=case["ignore_index"], outside_bin=True
    )
    metric.add_confusion(matrices)
    assert_same_results(metric.compute(nan_to_num=case["nan_to_num"]), reference_mean_iou(**case))


@pytest.mark.parametrize("seed", range(30))
def test_per_sample_method_with_reduce_labels_matches_reference(seed):
    case = random_case(seed, remap=False, min_maps=1)
    metric = MeanIoU(case["num_labels"], case["ignore_index"], case["reduce_labels"])
    metric.add_confusion(metric.per_sample_confusion(case["predictions"], case["references"]))
    assert_same_results(metric.compute(nan_to_num=case["nan_to_num"]), reference_mean_iou(**case))


def test_batched_update_equals_one_map_at_a_time():
    generator = torch.Generator().manual_seed(0)
    references = torch.randint(0, 6, (4, 17, 23), generator=generator)
    references[:, :3] = 255
    predictions = torch.randint(0, 6, (4, 17, 23), generator=generator)
    batched, single = MeanIoU(5), MeanIoU(5)
    batched.update(predictions, references)
    for prediction, reference in zip(predictions, references):
        single.update(prediction, reference)
    assert torch.equal(batched.confusion, single.confusion)
    expected = reference_mean_iou(predictions.numpy(), references.numpy(), num_labels=5, ignore_index=255)
    assert_same_results(batched.compute(), expected)


def test_pil_images_and_nested_lists_are_maps_too():
    images = [Image.fromarray(p.astype(np.uint8)) for p in DOC_PREDICTIONS]  # evaluate's mean_iou takes Image features
    nested = [r.tolist() for r in DOC_REFERENCES]
    results = MeanIoU().compute(predictions=images, references=nested, num_labels=10)
    assert_same_results(results, reference_mean_iou(DOC_PREDICTIONS, DOC_REFERENCES, num_labels=10, ignore_index=255))


def test_flipped_arrays_are_maps_too():
    """NumPy views with negative strides (np.flip, [::-1]), which torch.from_numpy refuses, as evaluate takes them."""
    flipped = [np.flip(p) for p in DOC_PREDICTIONS], [r[::-1] for r in DOC_REFERENCES]
    copies = [p.copy() for p in flipped[0]], [r.copy() for r in flipped[1]]
    results = MeanIoU().compute(predictions=flipped[0], references=flipped[1], num_labels=10)
    assert_same_results(results, reference_mean_iou(*copies, num_labels=10, ignore_index=255))


def test_hundreds_of_classes_match_reference():
    rng = np.random.default_rng(1)
    references = [rng.integers(0, 310, size=(40, 50)), rng.integers(0, 310, size=(9, 70))]
    predictions = [rng.integers(-5, 305, size=r.shape) for r in references]
    case = {"predictions": predictions, "references": references, "num_labels": 300, "ignore_index": 255}
    assert_same_results(MeanIoU().compute(**case), reference_mean_iou(**case))


# --- evaluate's way: MeanIoU() without num_labels, every setting at compute() --------------------------


@pytest.mark.parametrize("seed", range(60))
def test_deferred_num_labels_streams_and_matches_reference(seed):
    case = wide_case(seed)
    metric = MeanIoU()
    add_in_batches(metric, case["predictions"], case["references"])
    expected = reference_mean_iou(**case)
    assert_same_results(metric.compute(**{name: case[name] for name in SETTINGS}), expected)
    assert_same_results(MeanIoU().compute(**case), expected)  # one-shot, on the same wide values


@pytest.mark.parametrize("seed", range(30))
def test_wide_values_stream_with_num_labels_too(seed):
    case = wide_case(seed)
    case["label_map"] = None  # update() does not remap
    streamed = MeanIoU(case["num_labels"], case["ignore_index"], case["reduce_labels"])
    add_in_batches(streamed, case["predictions"], [torch.from_numpy(r) for r in case["references"]])
    gathered = MeanIoU(case["num_labels"], case["ignore_index"], case["reduce_labels"])
    gathered.add_confusion(gathered.per_sample_confusion(case["predictions"], case["references"]))
    expected = reference_mean_iou(**case)
    assert_same_results(streamed.compute(nan_to_num=case["nan_to_num"]), expected)
    assert_same_results(gathered.compute(nan_to_num=case["nan_to_num"]), expected)


def test_huggingface_example_loop_gives_evaluate_numbers():
    """The semantic-segmentation example's loop: (B, H, W) argmax batches and uint8 label batches, several CPU
    chunks each, num_labels and the rest given to compute() only."""
    rng = np.random.default_rng(11)
    references = rng.integers(0, 7, size=(4, 160, 170)).astype(np.uint8)  # 27k pixels a map: two chunks
    references[rng.random(references.shape) < 0.1] = 255
    predictions = np.where(rng.random(references.shape) < 0.7, references, rng.integers(0, 6, size=references.shape))
    predictions = np.minimum(predictions, 5).astype(np.int64)
    metric = MeanIoU()
    for start in (0, 2):
        metric.add_batch(
            predictions=torch.from_numpy(predictions[start : start + 2]), references=references[start : start + 2]
        )
    for reduce_labels in (False, True):
        settings = {"num_labels": 6, "ignore_index": 255, "reduce_labels": reduce_labels}
        expected = reference_mean_iou(list(predictions), list(references), **settings)
        assert_same_results(metric.compute(**settings), expected)
    streamed = MeanIoU(num_labels=6, ignore_index=255)
    streamed.update(torch.from_numpy(predictions), torch.from_numpy(references))
    assert_same_results(streamed.compute(), metric.compute(num_labels=6, ignore_index=255))


def test_one_deferred_state_answers_any_settings():
    """The counts keep raw values: each compute() may pick its own num_labels, ignore_index, reduce_labels and
    label_map, and gets what evaluate would on the same maps."""
    rng = np.random.default_rng(5)
    references = [rng.integers(0, 6, size=(9, 13)).astype(np.uint8), rng.integers(0, 6, size=(20, 4)).astype(np.uint8)]
    references[0][:2] = 255
    predictions = [np.where(rng.random(r.shape) < 0.6, r, rng.integers(0, 7, size=r.shape)) for r in references]
    metric = MeanIoU()
    add_in_batches(metric, predictions, references, size=1)
    for settings in [
        {"num_labels": 6, "ignore_index": 255},
        {"num_labels": 5, "ignore_index": 255, "reduce_labels": True},
        {"num_labels": 6, "ignore_index": 0, "nan_to_num": -1.0},
        {"num_labels": 3, "ignore_index": None, "label_map": {4: 0, 5: 255, 255: 2}},
        {"num_labels": 2, "ignore_index": 255, "label_map": {1: 0, 2: 1}, "reduce_labels": True},
        {"num_labels": 1, "ignore_index": 3},
    ]:
        assert_same_results(metric.compute(**settings), reference_mean_iou(predictions, references, **settings))


def test_deferred_mode_takes_ignore_index_and_reduce_labels_defaults_from_the_constructor():
    """update() keeps raw values; the constructor's reduce_labels and ignore_index are compute()'s defaults, and
    apply to every map at compute(), as evaluate applies its compute() arguments."""
    references = [np.array([[0, 1, 2], [3, 255, 1]], dtype=np.uint8)]
    predictions = [np.array([[0, 0, 1], [2, 2, 1]])]
    metric = MeanIoU(ignore_index=255, reduce_labels=True)
    metric.update(predictions, references)
    reduced = reference_mean_iou(predictions, references, num_labels=3, ignore_index=255, reduce_labels=True)
    assert_same_results(metric.compute(num_labels=3), reduced)
    # references become [[255, 0, 1], [2, 255, 0]]: the 0 and 255 pixels are ignored; class 0 is missed once
    # (predicted 1), so classes 0 and 1 score 1/2 and class 2 scores 1
    np.testing.assert_array_equal(reduced["per_category_iou"], [0.5, 0.5, 1.0])
    as_given = reference_mean_iou(predictions, references, num_labels=3, ignore_index=0)
    assert_same_results(metric.compute(num_labels=3, ignore_index=0, reduce_labels=False), as_given)


@pytest.mark.parametrize(
    "name, references, predictions, settings",
    [
        (  # dataset ids far from 0, remapped into classes: counted in a table that starts at 40000
            "ids",
            np.random.default_rng(0).integers(40000, 40004, size=(30, 40)).astype(np.int32),
            np.random.default_rng(1).choice([0, 1, 2, 5000], size=(30, 40)),
            {"num_labels": 3, "ignore_index": 255, "label_map": {40000: 0, 40001: 1, 40002: 2, 40003: 255}},
        ),
        (  # 150 classes and a uint16-style ignore value: too wide for one table, the 65535s are sorted
            "uint16 ignore",
            np.where(np.arange(6000).reshape(60, 100) % 7 == 0, 65535, np.arange(6000).reshape(60, 100) % 150),
            np.arange(6000).reshape(60, 100) % 151,
            {"num_labels": 150, "ignore_index": 65535},
        ),
        (  # ~45k distinct wide pairs per map: sorted, and merged as they pile up
            "distinct wide values",
            np.where(
                np.arange(90000).reshape(300, 300) % 2,
                np.random.default_rng(2).integers(-(2**40), 2**40, size=(300, 300)),
                3,
            ),
            np.where(
                np.arange(90000).reshape(300, 300) % 3,
                np.random.default_rng(3).integers(-(2**40), 2**40, size=(300, 300)),
                3,
            ),
            {"num_labels": 5, "ignore_index": -1, "nan_to_num": 0.0},
        ),
    ],
)
def test_values_far_from_the_classes_are_counted_exactly(name, references, predictions, settings):
    maps = {"predictions": [predictions, predictions[::-1]], "references": [references, references[::-1]]}
    metric = MeanIoU()
    add_in_batches(metric, maps["predictions"], maps["references"], size=1)
    expected = reference_mean_iou(**maps, **settings)
    assert_same_results(metric.compute(**settings), expected)
    assert_same_results(MeanIoU().compute(**maps, **settings), expected)
    assert expected["overall_accuracy"] > 0, name  # some pixels are hits: not a vacuous comparison


def test_deferred_streaming_writes_no_cache_and_survives_compute(tmp_path, monkeypatch):
    monkeypatch.setattr(evaluate.config, "HF_METRICS_CACHE", str(tmp_path))
    metric = MeanIoU()
    assert metric.confusion is None
    metric.add_batch(predictions=DOC_PREDICTIONS[:2], references=DOC_REFERENCES[:2])
    metric.add(prediction=DOC_PREDICTIONS[2], reference=DOC_REFERENCES[2])
    first = metric.compute(num_labels=10, ignore_index=255)
    assert first["mean_iou"] == DOC_RESULTS["mean_iou"]
    assert_same_results(metric.compute(num_labels=10, ignore_index=255), first)  # compute() does not consume it
    assert list(tmp_path.rglob("*")) == []
    assert metric.writer is None and metric.data is None and len(metric) == 0
    metric.reset()
    assert metric.confusion is None
    with pytest.raises(MetricError, match=r"nothing accumulated"):
        metric.compute(num_labels=10)


def test_confusion_functions_apply_label_map_and_reduce_labels_as_evaluate():
    references = torch.tensor([[0, 1, 2], [3, 255, 7]], dtype=torch.uint8)
    predictions = torch.tensor([[0, 0, 1], [2, 2, 4]])
    # reduce_labels: [[255, 0, 1], [2, 255, 6]]; 6 is outside the 3 classes
    reduced = confusion_matrix(predictions, references, 3, outside_bin=True, reduce_labels=True)
    assert reduced.tolist() == [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]
    # label_map then reduce_labels: 7 -> 1 -> 0, and 1 -> 0 -> 255 (ignored)
    remapped = confusion_matrix(predictions, references, 3, label_map={7: 1, 1: 0}, reduce_labels=True)
    assert remapped.tolist() == [[0, 0, 0], [0, 1, 0], [0, 0, 1]]
    per_sample = per_sample_confusion(
        predictions[None], references[None], 3, label_map={7: 1, 1: 0}, reduce_labels=True
    )
    assert torch.equal(per_sample[0], remapped)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_deferred_state_stays_on_the_gpu_and_matches_the_cpu():
    case = wide_case(4)
    on_gpu, on_cpu = MeanIoU(), MeanIoU()
    add_in_batches(on_gpu, [torch.from_numpy(p).cuda() for p in case["predictions"]], case["references"])
    add_in_batches(on_cpu, case["predictions"], case["references"])
    settings = {name: case[name] for name in SETTINGS}
    assert_same_results(on_gpu.compute(**settings), on_cpu.compute(**settings))
    assert_same_results(on_gpu.compute(**settings), reference_mean_iou(**case))


@pytest.mark.parametrize("seed", range(20))
def test_the_accelerator_paths_match_reference_on_cpu_tensors(seed, monkeypatch):
    """On an accelerator a map is counted in one piece, and with num_labels every pixel is folded where it lies
    (no host sync): forced here on CPU tensors, every way of accumulating still gives evaluate's numbers."""
    monkeypatch.setattr(confusion, "_CHUNKED", ())
    case = wide_case(seed)
    expected = reference_mean_iou(**case)
    deferred = MeanIoU()
    add_in_batches(deferred, case["predictions"], case["references"])
    assert_same_results(deferred.compute(**{name: case[name] for name in SETTINGS}), expected)
    assert_same_results(MeanIoU().compute(**case), expected)
    case["label_map"] = None  # update() does not remap
    expected = reference_mean_iou(**case)
    settings = (case["num_labels"], case["ignore_index"], case["reduce_labels"])
    streamed, gathered = MeanIoU(*settings), MeanIoU(*settings)
    add_in_batches(streamed, case["predictions"], case["references"])
    gathered.add_confusion(gathered.per_sample_confusion(case["predictions"], case["references"]))
    assert_same_results(streamed.compute(nan_to_num=case["nan_to_num"]), expected)
    assert_same_results(gathered.compute(nan_to_num=case["nan_to_num"]), expected)


# --- evaluate semantics, spelled out ---------------------------------------------------------------


def test_reduce_labels_ignores_0_and_shifts_the_rest_down():
    metric = MeanIoU(num_labels=3, reduce_labels=True)
    metric.update(torch.tensor([[1, 0], [2, 0]]), torch.tensor([[0, 1], [3, 255]], dtype=torch.uint8))
    # references become [[255, 0], [2, 255]]: two pixels ignored, class 0 predicted 0, class 2 predicted 2
    assert metric.confusion.tolist() == [[1, 0, 0], [0, 0, 0], [0, 0, 1]]


def test_label_map_looks_every_value_up_in_the_original_map():
    results = MeanIoU().compute(
        predictions=[np.array([[2, 3]])], references=[np.array([[1, 2]])], num_labels=4, label_map={1: 2, 2: 3}
    )
    # 1 -> 2 and 2 -> 3, not 1 -> 2 -> 3: both pixels are hits
    assert results["overall_accuracy"] == 1.0
    np.testing.assert_array_equal(results["per_category_iou"], [np.nan, np.nan, 1.0, 1.0])


def test_values_outside_the_classes_count_in_one_marginal_as_in_evaluate():
    predictions, references = [np.array([[0, 255, 1]])], [np.array([[0, 1, 7]])]
    results = MeanIoU().compute(predictions=predictions, references=references, num_labels=2, ignore_index=-100)
    # class 1: labelled once (predicted 255, a miss), predicted once (where the label is 7): IoU 0 / 2
    np.testing.assert_array_equal(results["per_category_iou"], [1.0, 0.0])
    np.testing.assert_array_equal(results["per_category_accuracy"], [1.0, 0.0])
    assert results["overall_accuracy"] == 0.5
    assert_same_results(results, reference_mean_iou(predictions, references, num_labels=2, ignore_index=-100))


def test_absent_classes_are_nan_and_nan_to_num_replaces_them_everywhere():
    matrix = torch.tensor([[3, 1, 0], [0, 0, 0], [0, 0, 0]])
    results = metrics_from_confusion(matrix)
    np.testing.assert_array_equal(results["per_category_iou"], [0.75, 0.0, np.nan])
    np.testing.assert_array_equal(results["per_category_accuracy"], [0.75, np.nan, np.nan])
    assert results["mean_iou"] == 0.375 and results["mean_accuracy"] == 0.75
    filled = metrics_from_confusion(torch.zeros(2, 2, dtype=torch.int64), nan_to_num=-1)
    assert filled["mean_iou"] == filled["mean_accuracy"] == filled["overall_accuracy"] == -1
    np.testing.assert_array_equal(filled["per_category_iou"], [-1, -1])


# --- confusion matrices ------------------------------------------------------------------------------


def test_confusion_matrix_rows_are_references_and_columns_predictions():
    references = torch.tensor([[0, 0, 1], [2, 255, 2]])
    predictions = torch.tensor([[0, 1, 1], [0, 2, 2]])
    matrix = confusion_matrix(predictions, references, num_labels=3)
    assert matrix.dtype == torch.int64 and matrix.shape == (3, 3)
    assert matrix.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 1]]


def test_outside_values_are_dropped_from_the_matrix_and_kept_in_the_outside_bin():
    references = torch.tensor([[0, 1, 5, -3, 255]])
    predictions = torch.tensor([[9, 1, 0, 4, 0]])
    assert confusion_matrix(predictions, references, 2).tolist() == [[0, 0], [0, 1]]
    # row 2 / column 2: references (5, -3) and predictions (9, 4) outside [0, 2); 255 is ignored
    assert confusion_matrix(predictions, references, 2, outside_bin=True).tolist() == [[0, 0, 1], [0, 1, 0], [1, 0, 1]]


def test_wide_values_do_not_wrap_into_the_classes():
    references = torch.tensor([[2**32 + 1, -(2**32) + 1, 1]])
    predictions = torch.tensor([[1, 1, 2**33 + 1]])
    assert confusion_matrix(predictions, references, 3).tolist() == [[0] * 3] * 3
    assert confusion_matrix(predictions, references, 3, outside_bin=True)[3].tolist() == [0, 2, 0, 0]


@pytest.mark.parametrize("far", [2**35, 1000, -(2**35), -7])
def test_maps_whose_predictions_all_lie_outside_the_classes(far):
    references = torch.tensor([[0, 1, 2], [2, 255, 1]])
    predictions = torch.full((2, 3), far)
    matrix = confusion_matrix(predictions, references, 3, outside_bin=True)
    assert matrix.tolist() == [[0, 0, 0, 1], [0, 0, 0, 2], [0, 0, 0, 2], [0, 0, 0, 0]]
    case = {"predictions": [predictions.numpy()], "references": [references.numpy()], "ignore_index": 255}
    deferred = MeanIoU()
    deferred.add_batch(predictions=case["predictions"], references=case["references"])
    expected = reference_mean_iou(**case, num_labels=3)
    assert_same_results(deferred.compute(num_labels=3), expected)
    assert_same_results(MeanIoU().compute(**case, num_labels=3), expected)


def test_ignore_index_outside_the_dtype_matches_nothing():
    references = torch.tensor([[156, 1]], dtype=torch.uint8)  # torch would read -100 as 156 in uint8
    matrix = confusion_matrix(torch.tensor([[0, 1]]), references, 2, ignore_index=-100, outside_bin=True)
    assert matrix.tolist() == [[0, 0, 0], [0, 1, 0], [1, 0, 0]]


def test_confusion_matrix_matches_a_plain_count_on_random_maps():
    rng = np.random.default_rng(3)
    shape = (3, 311, 509)  # 475k pixels: several CPU chunks, the last one partial
    predictions = rng.integers(-1, 8, size=shape)
    references = rng.integers(-1, 8, size=shape)
    references[rng.random(references.shape) < 0.1] = 255
    expected = np.zeros((7, 7), dtype=np.int64)
    keep = (references >= 0) & (references < 7) & (predictions >= 0) & (predictions < 7)
    np.add.at(expected, (references[keep], predictions[keep]), 1)
    matrix = confusion_matrix(torch.from_numpy(predictions), torch.from_numpy(references), 7)
    assert matrix.tolist() == expected.tolist()


def test_per_sample_confusion_gives_one_matrix_per_map():
    predictions = [torch.tensor([[0, 1]]), torch.tensor([[1], [1], [0]])]
    references = [torch.tensor([[0, 0]]), torch.tensor([[1], [255], [1]])]
    matrices = per_sample_confusion(predictions, references, num_labels=2, ignore_index=255)
    assert matrices.shape == (2, 2, 2) and matrices.dtype == torch.int64
    assert matrices.tolist() == [[[1, 1], [0, 0]], [[0, 0], [1, 1]]]
    batch = per_sample_confusion(torch.zeros(3, 4, 5, dtype=torch.long), torch.zeros(3, 4, 5, dtype=torch.long), 2)
    assert batch.shape == (3, 2, 2) and batch[:, 0, 0].tolist() == [20, 20, 20]
    one_map = per_sample_confusion(torch.zeros(4, 5, dtype=torch.long), torch.ones(4, 5, dtype=torch.long), 2)
    assert one_map.shape == (1, 2, 2) and one_map[0, 1, 0] == 20
    assert per_sample_confusion([], [], 4, outside_bin=True).shape == (0, 5, 5)


def test_gather_for_metrics_drops_padding_and_the_sum_equals_one_process():
    """Accelerate splits 5 samples over 2 processes as [0, 1, 2] and [3, 4, 4]: sample 4 is padding.

    gather_for_metrics concatenates the per-process outputs along dim 0 and drops the trailing
    duplicates, so only per-sample matrices (not per-process sums) come out right.
    """
    rng = np.random.default_rng(7)
    sizes = [(5, 7), (6, 4), (3, 9), (8, 8), (2, 11)]
    references = [rng.integers(0, 5, size=s) for s in sizes]  # 4 is outside the 4 classes, 0 is ignored
    predictions = [np.where(rng.random(s) < 0.6, r, rng.integers(0, 5, size=s)) for s, r in zip(sizes, references)]
    predictions, references = [torch.from_numpy(p) for p in predictions], [torch.from_numpy(r) for r in references]
    single = MeanIoU(num_labels=4, ignore_index=0)
    single.update(predictions, references)

    splits = [[0, 1, 2], [3, 4, 4]]
    per_process = [single.per_sample_confusion([predictions[i] for i in s], [references[i] for i in s]) for s in splits]
    assert [m.shape for m in per_process] == [(3, 5, 5)] * 2
    gathered = torch.cat(per_process)[: len(sizes)]  # what gather_for_metrics returns: padding dropped
    distributed = MeanIoU(num_labels=4, ignore_index=0)
    distributed.add_confusion(gathered)
    assert torch.equal(distributed.confusion, single.confusion)
    assert_same_results(distributed.compute(), single.compute())
    oracle = reference_mean_iou([p.numpy() for p in predictions], [r.numpy() for r in references], 4, ignore_index=0)
    assert_same_results(single.compute(), oracle)

    padded = MeanIoU(num_labels=4, ignore_index=0)  # summing each process's batch instead counts sample 4 twice
    padded.add_confusion(torch.stack([matrices.sum(0) for matrices in per_process]))
    assert not torch.equal(padded.confusion, single.confusion)


def test_per_sample_method_applies_the_metric_settings():
    metric = MeanIoU(num_labels=2, ignore_index=255, reduce_labels=True)
    references = torch.tensor([[[0, 1], [2, 3]], [[1, 1], [1, 1]]], dtype=torch.uint8)
    predictions = torch.tensor([[[1, 0], [1, 1]], [[0, 0], [0, 1]]])
    matrices = metric.per_sample_confusion(predictions, references)
    # reduced references: [[255, 0], [1, 2]] and all 0; 2 is outside the 2 classes (row 2)
    assert matrices.tolist() == [[[1, 0, 0], [0, 1, 0], [0, 1, 0]], [[3, 1, 0], [0, 0, 0], [0, 0, 0]]]
    metric.update(predictions, references)
    assert torch.equal(metric.confusion, matrices.sum(0)[:2, :2])


# --- the MeanIoU object ------------------------------------------------------------------------------


def test_is_an_evaluate_metric_with_its_info():
    metric = MeanIoU(num_labels=3)
    assert isinstance(metric, evaluate.Metric)
    assert metric.name == "mean_iou"
    assert set(metric.features) == {"predictions", "references"}
    assert "MMSegmentation" in metric.citation and "IoU" in metric.description
    assert "reduce_labels" in metric.inputs_description


def test_streaming_writes_no_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(evaluate.config, "HF_METRICS_CACHE", str(tmp_path))
    metric = MeanIoU(num_labels=3)
    metric.update(torch.tensor([[0, 1], [2, 2]]), torch.tensor([[0, 1], [2, 1]]))
    metric.add_batch(predictions=[np.array([[1]])], references=[np.array([[1]])])
    metric.add(prediction=np.array([[0]]), reference=np.array([[0]]))
    metric.compute()
    MeanIoU().compute(predictions=DOC_PREDICTIONS, references=DOC_REFERENCES, num_labels=10)
    assert list(tmp_path.rglob("*")) == []
    assert metric.writer is None and metric.data is None and len(metric) == 0


def test_add_batch_and_add_stream_like_update():
    by_update, by_evaluate_api = MeanIoU(10), MeanIoU(10)
    by_update.update([torch.from_numpy(p) for p in DOC_PREDICTIONS], [torch.from_numpy(r) for r in DOC_REFERENCES])
    by_evaluate_api.add_batch(predictions=DOC_PREDICTIONS[:2], references=DOC_REFERENCES[:2])
    by_evaluate_api.add(prediction=DOC_PREDICTIONS[2], reference=DOC_REFERENCES[2])
    assert torch.equal(by_update.confusion, by_evaluate_api.confusion)


def test_state_is_int64_on_the_predictions_device_and_survives_compute():
    metric = MeanIoU(num_labels=3)
    assert metric.confusion is None
    metric.update(torch.tensor([[0, 1]]), torch.tensor([[0, 0]]))
    assert metric.confusion.dtype == torch.int64 and metric.confusion.device.type == "cpu"
    first = metric.compute()
    assert_same_results(metric.compute(), first)  # compute() does not consume the state
    metric.update(torch.tensor([[2]]), torch.tensor([[2]]))
    assert metric.confusion.sum() == 3
    metric.reset()
    assert metric.confusion is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_state_stays_on_the_gpu():
    metric = MeanIoU(num_labels=3)
    metric.update(torch.tensor([[0, 1]], device="cuda"), torch.tensor([[0, 255]], device="cuda"))
    metric.add_confusion(torch.eye(3, dtype=torch.int64))  # a CPU matrix joins the GPU state
    assert metric.confusion.device.type == "cuda"
    assert metric.confusion.cpu().tolist() == [[2, 0, 0], [0, 1, 0], [0, 0, 1]]


def test_one_shot_compute_leaves_the_accumulated_state_alone():
    metric = MeanIoU(num_labels=10)
    metric.update(torch.tensor([[3]]), torch.tensor([[3]]))
    before = metric.confusion
    one_shot = metric.compute(predictions=DOC_PREDICTIONS, references=DOC_REFERENCES)
    assert one_shot["mean_iou"] == DOC_RESULTS["mean_iou"]
    assert torch.equal(metric.confusion, before)


def test_add_confusion_accepts_both_layouts_and_batches():
    metric = MeanIoU(num_labels=2)
    metric.add_confusion(np.array([[1, 2], [3, 4]]))
    metric.add_confusion(torch.ones(4, 3, 3, dtype=torch.int32))  # outside_bin layout, batched
    assert metric.confusion.tolist() == [[5, 6], [7, 8]]
    # the outside row / column reach the marginals: class 0 labelled 5 + 6 + 4 times, predicted 5 + 7 + 4
    assert metric.compute()["per_category_iou"][0] == 5 / (15 + 16 - 5)


def test_id2label_names_the_classes_and_sets_num_labels():
    metric = MeanIoU(id2label={0: "road", 1: "sidewalk", 2: "sky"})
    assert metric.num_labels == 3
    metric.update(torch.tensor([[0, 1, 1]]), torch.tensor([[0, 1, 0]]))
    table = per_class_table(metric.compute(), metric.id2label).splitlines()
    assert table[0].split() == ["class", "IoU", "Acc"]
    assert table[2].split() == ["road", "50.00", "50.00"]
    assert table[3].split() == ["sidewalk", "50.00", "100.00"]
    assert table[4].split() == ["sky", "-", "-"]  # absent from both: NaN
    assert table[6].split() == ["mean", "50.00", "75.00"]
    assert table[7].split() == ["overall", "accuracy", "66.67"]


def test_per_class_table_takes_string_keys_and_falls_back_to_indices():
    results = metrics_from_confusion(torch.eye(3, dtype=torch.int64))
    lines = per_class_table(results, {"0": "road", "2": "sky"}).splitlines()
    assert [line.split()[0] for line in lines[2:5]] == ["road", "1", "sky"]
    assert [line.split()[0] for line in per_class_table(results, None).splitlines()[2:5]] == ["0", "1", "2"]


# --- errors --------------------------------------------------------------------------------------------


def test_batches_of_different_shapes_name_both_shapes():
    message = r"predictions and references must have the same shape, found \(2, 4, 5\) and \(2, 4, 6\)"
    with pytest.raises(MetricError, match=message):
        MeanIoU(3).update(torch.zeros(2, 4, 5, dtype=torch.long), torch.zeros(2, 4, 6, dtype=torch.long))


def test_maps_of_different_shapes_name_the_map_and_both_shapes():
    predictions = [np.zeros((2, 2), dtype=int), np.zeros((3, 4), dtype=int)]
    references = [np.zeros((2, 2), dtype=int), np.zeros((4, 3), dtype=int)]
    message = r"predictions\[1\] and references\[1\] must have the same shape, found \(3, 4\) and \(4, 3\)"
    with pytest.raises(MetricError, match=message):
        MeanIoU().compute(predictions=predictions, references=references, num_labels=3)


@pytest.mark.parametrize(
    "call, message",
    [
        (
            lambda: MeanIoU().compute(predictions=DOC_PREDICTIONS, references=DOC_REFERENCES),
            r"MeanIoU.compute: num_labels: expected an int >= 1, found None",
        ),
        (lambda: MeanIoU(num_labels=0), r"MeanIoU: num_labels: expected an int >= 1, found 0"),
        (
            lambda: confusion_matrix(torch.zeros(1, 1), torch.zeros(1, 1), True),
            r"confusion_matrix: num_labels: expected an int >= 1, found True",
        ),
        (
            lambda: MeanIoU().per_sample_confusion(
                torch.zeros(2, 2, dtype=torch.long), torch.zeros(2, 2, dtype=torch.long)
            ),
            (
                r"MeanIoU.per_sample_confusion: num_labels: expected an int >= 1 to size the matrices, found None; "
                r"build the metric as MeanIoU\(num_labels=...\)"
            ),
        ),
        (lambda: MeanIoU(num_labels=3, id2label={0: "a"}), r"num_labels=3 but id2label names 1 classes"),
    ],
)
def test_missing_or_bad_num_labels_is_refused(call, message):
    with pytest.raises(MetricError, match=message):
        call()


def test_add_confusion_of_the_wrong_size_names_expected_and_found():
    message = r"expected a \(4, 4\) or \(5, 5\) matrix, or a batch of them, for num_labels=4; found shape \(3, 3\)"
    with pytest.raises(MetricError, match=message):
        MeanIoU(4).add_confusion(torch.zeros(3, 3, dtype=torch.int64))
    with pytest.raises(MetricError, match=r"found shape \(2, 4, 4, 4\)"):
        MeanIoU(4).add_confusion(torch.zeros(2, 4, 4, 4, dtype=torch.int64))
    with pytest.raises(MetricError, match=r"expected integer counts, found dtype torch.float32"):
        MeanIoU(4).add_confusion(torch.zeros(4, 4))


@pytest.mark.parametrize(
    "predictions, references, message",
    [
        (
            torch.zeros(2, 2),
            torch.zeros(2, 2, dtype=torch.long),
            r"predictions: expected integer class indices, found dtype torch.float32",
        ),
        (
            torch.zeros(1, 1, 2, 2, dtype=torch.long),
            torch.zeros(1, 1, 2, 2, dtype=torch.long),
            r"predictions: expected shape \(H, W\) or \(B, H, W\), found \(1, 1, 2, 2\)",
        ),
        (
            [torch.zeros(2, dtype=torch.long)],
            [torch.zeros(2, dtype=torch.long)],
            r"predictions\[0\]: expected shape \(H, W\), found \(2,\)",
        ),
        (
            [np.zeros((2, 2), dtype=int)] * 2,
            [np.zeros((2, 2), dtype=int)],
            r"expected as many predictions as references, found 2 predictions and 1 references",
        ),
    ],
)
def test_bad_maps_are_refused(predictions, references, message):
    with pytest.raises(MetricError, match=message):
        MeanIoU(3).update(predictions, references)


def test_compute_requires_something_accumulated():
    with pytest.raises(MetricError, match=r"nothing accumulated; call update\(\) or add_confusion\(\) first"):
        MeanIoU(3).compute()


def test_compute_refuses_settings_that_contradict_the_accumulated_state():
    metric = MeanIoU(num_labels=3)
    metric.update(torch.zeros(2, 2, dtype=torch.long), torch.zeros(2, 2, dtype=torch.long))
    assert metric.compute(num_labels=3, ignore_index=255)["overall_accuracy"] == 1.0  # repeating them is fine
    with pytest.raises(MetricError, match=r"num_labels=5, but the accumulated state was built with num_labels=3"):
        metric.compute(num_labels=5)
    with pytest.raises(MetricError, match=r"label_map applies only with predictions="):
        metric.compute(label_map={1: 2})
    with pytest.raises(MetricError, match=r"expected predictions and references together, found no references"):
        metric.compute(predictions=DOC_PREDICTIONS)


def test_deferred_mode_errors_name_what_is_missing():
    metric = MeanIoU()
    with pytest.raises(
        MetricError, match=r"MeanIoU.compute: nothing accumulated; call add_batch\(\) or update\(\) first"
    ):
        metric.compute(num_labels=3)
    metric.add_batch(predictions=DOC_PREDICTIONS, references=DOC_REFERENCES)
    message = (
        r"MeanIoU.compute: num_labels: expected an int >= 1, found None; this MeanIoU was built without num_labels, "
        r"so compute\(\) needs it: compute\(num_labels=...\)"
    )
    with pytest.raises(MetricError, match=message):
        metric.compute(ignore_index=255)
    with pytest.raises(MetricError, match=r"MeanIoU.compute: num_labels: expected an int >= 1, found 0"):
        metric.compute(num_labels=0)
    with pytest.raises(TypeError, match=r"MeanIoU.compute: unexpected argument 'num_classes'"):
        metric.compute(num_labels=10, num_classes=10)
    with pytest.raises(MetricError, match=r"MeanIoU.confusion: num_labels: expected an int >= 1 to build the matrix"):
        _ = metric.confusion
    message = r"MeanIoU.add_confusion: num_labels: expected an int >= 1 to add a matrix, found None; build the metric"
    with pytest.raises(MetricError, match=message):
        metric.add_confusion(torch.zeros(3, 3, dtype=torch.int64))
    with pytest.raises(
        MetricError, match=r"predictions\[0\]: expected integer class indices, found dtype torch.float64"
    ):
        metric.add_batch(predictions=[np.zeros((2, 2))], references=[np.zeros((2, 2), dtype=int)])
    # none of the refused calls changed the counts
    oracle = reference_mean_iou(DOC_PREDICTIONS, DOC_REFERENCES, num_labels=10, ignore_index=255)
    assert_same_results(metric.compute(num_labels=10, ignore_index=255), oracle)


def test_metrics_from_confusion_refuses_a_non_square_matrix():
    with pytest.raises(MetricError, match=r"expected a \(K, K\) with K >= 1 matrix, found shape \(2, 3\)"):
        metrics_from_confusion(np.zeros((2, 3)))


@pytest.mark.parametrize("ignore_index", [255, 2, None])
def test_argmax_predictions_and_byte_labels_match_evaluate(ignore_index):
    """Predictions in [0, K) and references in [0, 256), the common case; labels past K (not ignored)
    and an ignore index among the classes must still come out as evaluate counts them."""
    rng = np.random.default_rng(7)
    references = [rng.integers(0, 256, size=(300, 200)).astype(np.uint8) for _ in range(2)]
    for reference in references:
        reference[reference > 30] = rng.integers(0, 9, size=int((reference > 30).sum()))  # mostly classes 0..8
    predictions = [rng.integers(0, 9, size=r.shape) for r in references]
    case = {"predictions": predictions, "references": references, "num_labels": 9, "ignore_index": ignore_index}
    if ignore_index is None:
        case["ignore_index"] = 255
        references[0][:5] = 12  # out-of-range labels still present
    assert_same_results(MeanIoU().compute(**case), reference_mean_iou(**case))
    streamed = MeanIoU(num_labels=9, ignore_index=case["ignore_index"])
    streamed.update([torch.from_numpy(p) for p in predictions], [torch.from_numpy(r) for r in references])
    assert_same_results(streamed.compute(), reference_mean_iou(**case))
