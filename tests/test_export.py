"""`segtune export`: ONNX through PyTorch's dynamo exporter, its own check, and ONNX Runtime as an inference backend."""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from huggingface_hub import snapshot_download
from PIL import Image
from transformers import (
    AutoModelForSemanticSegmentation,
    SegformerForSemanticSegmentation,
    SegformerImageProcessor,
)
from transformers.modeling_outputs import SemanticSegmenterOutput

import segtune
from segtune.commands import main
from segtune.errors import ExportError
from segtune.evaluation import evaluate_checkpoint
from segtune.export.check import CHECK_SHAPES, check_miou
from segtune.export.exporter import TRACE_SHAPE
from segtune.export.graph import Normalise
from segtune.export.runtime import OnnxRuntimeModel
from segtune.hub import push
from segtune.models.mix_transformer import CheckpointError
from segtune.recipe import load_recipe
from tests.conftest import TINY_RUN
from tests.test_hub import MODEL_FILES

ONNX_FILES = {"model.onnx", "config.json", "preprocessor_config.json", "export.json"}


def _export(*args: str) -> str:
    """Run `segtune export ARGS`; return what it printed; fail unless it succeeded."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["export", *args]) == 0
    return printed.getvalue()


@pytest.fixture(scope="session")
def exported(finished_run, tmp_path_factory) -> tuple[Path, str]:
    """A copy of the finished run after `segtune export RUN --format onnx` (fp32, checked), and what it printed.
    Copy it before changing it."""
    run = Path(shutil.copytree(finished_run, tmp_path_factory.mktemp("exported") / "run"))
    return run, _export(str(run), "--format", "onnx")


@pytest.fixture
def images(tmp_path) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    for name, (width, height) in (("street", (96, 64)), ("field", (70, 50))):
        paths.append(tmp_path / f"{name}.png")
        Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(paths[-1])
    return paths


def _description(folder: Path) -> dict:
    return json.loads((folder / "export.json").read_text())


def test_export_writes_the_model_its_config_processor_and_what_is_inside(exported):
    run, printed = exported
    folder = run / "onnx"
    assert {p.name for p in folder.iterdir()} == ONNX_FILES
    config, run_config = (json.loads((d / "config.json").read_text()) for d in (folder, run))
    assert config["model_type"] == "segformer" and "auto_map" not in config  # readable without segtune
    assert config["id2label"] == run_config["id2label"] and config["palette"] == run_config["palette"]
    processor, run_processor = (json.loads((d / "preprocessor_config.json").read_text()) for d in (folder, run))
    assert processor == run_processor
    description = _description(folder)
    assert description["inputs"] == [
        {"name": "pixel_values", "dtype": "float32", "shape": ["batch", 3, "height", "width"]}
    ]
    [logits] = description["outputs"]
    assert (logits["name"], logits["dtype"], logits["shape"][:2]) == ("logits", "float32", ["batch", 6])
    assert description["opset"] == 18 and description["precision"] == "fp32" and description["source"] == str(run)
    assert description["options"] == {"half": False, "preprocess": False, "labels": False}
    assert description["exporter"].startswith("torch.onnx.export(dynamo=True)")
    assert description["versions"]["torch"] == torch.__version__ and description["versions"]["onnx"] == onnx.__version__
    assert [v.name for v in onnx.load(str(folder / "model.onnx")).graph.input] == ["pixel_values"]
    lines = printed.splitlines()
    assert lines[0].startswith(f'exported {folder}/model.onnx: pixel_values float32 ["batch", 3, "height", "width"] ->')
    assert re.fullmatch(
        r"parity: fp32 at 1x97x131, 2x160x224, 1x250x190: largest logit difference \d\.\de-\d\d \(target 1e-04\), "
        r"same argmax on 100\.000% of pixels \(target 99\.9%\)",
        lines[1],
    ), lines[1]
    assert re.fullmatch(
        r"mIoU: demo validation \(whole\): PyTorch 0\.\d{4}, ONNX Runtime 0\.\d{4}, 0\.\d\d points apart \(limit 0\.1\)",
        lines[2],
    ), lines[2]


def test_onnx_runtime_matches_pytorch_at_three_sizes_it_was_not_traced_at(exported):
    run, _ = exported
    model = AutoModelForSemanticSegmentation.from_pretrained(run).eval()
    session = onnxruntime.InferenceSession(str(run / "onnx" / "model.onnx"), providers=["CPUExecutionProvider"])
    generator = torch.Generator().manual_seed(1)
    for shape in ((1, 3, 101, 77), (3, 3, 128, 64), (2, 3, 200, 152)):
        assert shape != TRACE_SHAPE and shape[1:] not in [(3, *s[1:]) for s in CHECK_SHAPES]
        pixels = torch.randn(shape, generator=generator)
        with torch.no_grad():
            expected = model(pixel_values=pixels).logits.numpy()
        (found,) = session.run(None, {"pixel_values": pixels.numpy()})
        assert found.shape == expected.shape
        assert np.abs(found - expected).max() <= 1e-4


def test_the_check_reports_segtune_evaluates_miou_and_the_exports_within_a_tenth_of_a_point(exported):
    run, _ = exported
    check = _description(run / "onnx")["check"]
    assert check["parity"]["passed"] and check["parity"]["max_abs_logit_diff"] <= 1e-4
    assert check["parity"]["argmax_agreement"] == 1.0
    miou = check["miou"]
    recorded = json.loads((run / "metrics.json").read_text())["mean_iou"]
    assert miou["miou_pytorch"] == pytest.approx(recorded)
    assert miou["difference_points"] == pytest.approx(abs(miou["miou_pytorch"] - miou["miou_onnxruntime"]) * 100)
    assert miou["difference_points"] <= 0.1 and miou["passed"]


def test_a_mismatch_fails_the_miou_check_with_both_numbers(exported, monkeypatch, caplog):
    run, _ = exported
    recipe = load_recipe(run / "recipe.yaml")
    forward = OnnxRuntimeModel.forward

    def classes_shifted(self, pixel_values, **kwargs):
        return SemanticSegmenterOutput(logits=forward(self, pixel_values).logits.roll(1, dims=1))

    monkeypatch.setattr(OnnxRuntimeModel, "forward", classes_shifted)
    broken = OnnxRuntimeModel(run / "onnx")
    expected, _ = evaluate_checkpoint(str(run), recipe)
    found, _ = evaluate_checkpoint(str(run), recipe, model=broken)
    pytorch, onnxruntime_ = float(expected["mean_iou"]), float(found["mean_iou"])
    assert abs(pytorch - onnxruntime_) * 100 > 0.1
    message = f"PyTorch {pytorch:.4f}, ONNX Runtime {onnxruntime_:.4f}, {abs(pytorch - onnxruntime_) * 100:.2f} points apart (limit 0.1)"
    with pytest.raises(
        ExportError, match=re.escape(f"the export's mIoU differs from PyTorch's: demo validation (whole): {message}")
    ):
        check_miou(str(run), broken, recipe)
    report = check_miou(str(run), broken, recipe, half=True)  # fp16: reported, not fatal
    assert not report["passed"] and message in caplog.text


def test_segment_and_predict_run_the_export_through_the_same_code(exported, images, tmp_path):
    run, _ = exported
    for settings in (
        {},
        {"mode": "slide", "crop_size": (32, 32), "stride": (24, 24)},
        {"tta": True, "tta_scales": (0.75, 1.0)},
        {"tile": True, "crop_size": (32, 32), "stride": (24, 24)},  # an ONNX model has no parameters to ask
    ):
        expected = segtune.segment(str(run), images, **settings)
        by_file = segtune.segment(str(run / "onnx" / "model.onnx"), images, **settings)
        by_folder = segtune.segment(run / "onnx", images, backend="onnx", **settings)
        for mask, file_mask, folder_mask in zip(expected, by_file, by_folder):
            np.testing.assert_array_equal(file_mask, mask)
            np.testing.assert_array_equal(folder_mask, mask)
    written = {}
    for option, model in (("--model", run), ("--onnx", run / "onnx")):
        out = tmp_path / option.strip("-")
        assert (
            main(
                [
                    "predict",
                    option,
                    str(model),
                    *map(str, images),
                    "--out",
                    str(out),
                    "--raw",
                    "--mode",
                    "slide",
                    "--crop_size",
                    "32",
                    "32",
                    "--stride",
                    "24",
                    "24",
                ]
            )
            == 0
        )
        written[option] = {p.name: p.read_bytes() for p in out.iterdir()}
    # mask, overlay, legend and labels per image
    assert len(written["--onnx"]) == 8 and written["--onnx"] == written["--model"]


def test_normalisation_in_the_graph_is_the_image_processors_to_the_bit():
    images = torch.randint(0, 256, (2, 3, 37, 53), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    for processor in (
        SegformerImageProcessor(do_resize=False),
        SegformerImageProcessor(do_resize=False, image_mean=[0.5, 0.4, 0.3], image_std=0.25),
        SegformerImageProcessor(do_resize=False, do_normalize=False),
        SegformerImageProcessor(do_resize=False, do_rescale=False),
    ):
        expected = processor(list(images), return_tensors="pt")["pixel_values"]
        assert torch.equal(Normalise(processor)(images), expected), processor


def test_the_push_uploads_the_export_with_the_run(hub_env, exported, images, tmp_path):
    run = Path(shutil.copytree(exported[0], tmp_path / "run"))
    push(run, "user/tiny-onnx")
    stored = set(hub_env.resolve(hub_env.repo("user/tiny-onnx"), "main").files)
    assert {f"onnx/{name}" for name in ONNX_FILES} <= stored and "model.safetensors" in stored
    assert not [name for name in stored if name.startswith("checkpoints/")]
    pulled = Path(snapshot_download("user/tiny-onnx", allow_patterns=["onnx/*"])) / "onnx"
    assert {p.name for p in pulled.iterdir()} == ONNX_FILES
    np.testing.assert_array_equal(
        segtune.segment(pulled, images, backend="onnx")[0], segtune.segment(str(run), images)[0]
    )


def _graph(path: Path, dtype: int) -> Path:
    """A one-node ONNX model (B, 3, H, W) -> (B, 3, H, W) of `dtype`."""
    shape = ["batch", 3, "height", "width"]
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Identity", ["pixel_values"], ["labels"])],
        "identity",
        [onnx.helper.make_tensor_value_info("pixel_values", dtype, shape)],
        [onnx.helper.make_tensor_value_info("labels", dtype, shape)],
    )
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 18)], ir_version=10)
    onnx.save(model, path)
    return path


def test_onnx_files_that_cannot_run_get_clear_errors(exported, images, tmp_path, capsys):
    run, _ = exported
    truncated = tmp_path / "truncated" / "model.onnx"
    truncated.parent.mkdir()
    truncated.write_bytes((run / "onnx" / "model.onnx").read_bytes()[:5000])
    uint8_graph = _graph(tmp_path / "uint8.onnx", onnx.TensorProto.UINT8)
    cases = (
        (
            tmp_path / "nowhere.onnx",
            f"{tmp_path / 'nowhere.onnx'}: no such file; expected an exported model.onnx or the folder holding it",
        ),
        (run, f"{run}: no model.onnx in this folder, found ["),
        (truncated.parent, f"{truncated}: corrupt ONNX model, ONNX Runtime cannot load it ("),
        (
            run / "model.safetensors",
            f"{run / 'model.safetensors'}: not an ONNX model; expected the model.onnx that `segtune export` writes, or its folder (ONNX Runtime: ",
        ),
        (
            uint8_graph,
            f"{uint8_graph}: takes pixel_values tensor(uint8) ['batch', 3, 'height', 'width'] and returns labels",
        ),
    )
    for path, message in cases:
        assert main(["predict", "--onnx", str(path), str(images[0]), "--out", str(tmp_path / "out")]) == 1
        assert capsys.readouterr().err.startswith(f"error: {message}"), path
        with pytest.raises(CheckpointError, match=re.escape(message)):
            segtune.segment(path, images, backend="onnx")
    with pytest.raises(
        CheckpointError,
        match="segtune's inference needs a graph from float pixel_values to logits: export it without --preprocess and --labels",
    ):
        OnnxRuntimeModel(uint8_graph)
    with pytest.raises(
        ValueError, match=r"backend: expected one of \['torch', 'onnx'\], 'onnx' with a path; found 'tensorrt'"
    ):
        segtune.segment(str(run), images, backend="tensorrt")


@pytest.mark.parametrize(
    "args, message",
    [
        (["{tmp}/nowhere"], "{tmp}/nowhere: no such local directory (nor a Hub repo id of the form user/name)\n"),
        (["user/model"], "user/model: a Hub id has no folder to export into: pass --output_dir\n"),
        (
            ["{run}", "--opset", "99", "--output_dir", "{tmp}/o"],
            "--opset: expected 1 to {newest} (the newest opset of onnx {onnx}), found 99\n",
        ),
        (["{tmp}", "--set", "optim.lr=1"], "--set optim.lr=1: no recipe to apply it to; pass --recipe\n"),
        (["{tmp}", "--check"], "--check: no recipe to evaluate {tmp} with (not a run directory): pass --recipe\n"),
        (["{tmp}"], "{tmp}: not a model checkpoint; expected config.json and weights (*.safetensors), found []\n"),
    ],
    ids=["missing", "hub-id", "opset", "set-without-recipe", "check-without-recipe", "not-a-checkpoint"],
)
def test_export_refuses_what_it_cannot_do_in_one_line(args, message, exported, tmp_path, capsys):
    fill = {
        "tmp": str(tmp_path),
        "run": str(exported[0]),
        "newest": onnx.defs.onnx_opset_version(),
        "onnx": onnx.__version__,
    }
    assert main(["export", *(a.format(**fill) for a in args)]) == 1
    assert capsys.readouterr().err == f"error: {message.format(**fill)}"


def test_without_the_onnx_extra_the_error_says_how_to_install_it(exported, images, tmp_path, monkeypatch, capsys):
    run, _ = exported
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime now raises ImportError
    with pytest.raises(
        ExportError,
        match=re.escape(
            'ONNX Runtime inference needs the onnxruntime package, which is not installed: pip install "segtune[onnx]"'
        ),
    ):
        segtune.segment(run / "onnx", images, backend="onnx")
    monkeypatch.setitem(sys.modules, "onnxscript", None)
    assert main(["export", str(run), "--output_dir", str(tmp_path / "x")]) == 1
    assert (
        capsys.readouterr().err
        == 'error: segtune export needs the onnxscript package, which is not installed: pip install "segtune[onnx]"\n'
    )
    assert not (tmp_path / "x").exists()


def test_python_m_segtune_export_is_the_export_command():
    done = subprocess.run(
        [sys.executable, "-m", "segtune.export", "--help"], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0 and done.stdout.startswith("usage: python -m segtune.export ")
    assert "--preprocess" in done.stdout and "--labels" in done.stdout


def _stock_segformer(run: Path, folder: Path) -> SegformerForSemanticSegmentation:
    """The run's model as transformers' own `SegformerForSemanticSegmentation`, saved in `folder` (no image processor)."""
    model = AutoModelForSemanticSegmentation.from_pretrained(run).to_segformer().eval()
    model.save_pretrained(folder)
    return model


@pytest.mark.slow  # an export (~20-60 s) and two evaluations
def test_export_a_saved_stock_segformer_checked_on_a_recipe(finished_run, tmp_path):
    stock = _stock_segformer(finished_run, tmp_path / "stock")
    printed = _export(str(tmp_path / "stock"), "--recipe", "demo.yaml", "--set", *TINY_RUN)
    description = _description(tmp_path / "stock" / "onnx")
    assert description["source_model_type"] == "segformer"
    assert json.loads((tmp_path / "stock" / "onnx" / "config.json").read_text())["model_type"] == "segformer"
    miou = description["check"]["miou"]
    expected, _ = evaluate_checkpoint(str(tmp_path / "stock"), load_recipe("demo.yaml", TINY_RUN))
    assert miou["miou_pytorch"] == pytest.approx(float(expected["mean_iou"])) and miou["difference_points"] <= 0.1
    assert f"PyTorch {miou['miou_pytorch']:.4f}, ONNX Runtime {miou['miou_onnxruntime']:.4f}" in printed
    pixels = torch.randn(3, 3, 77, 45, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        logits = stock(pixel_values=pixels).logits
    found = OnnxRuntimeModel(tmp_path / "stock" / "onnx")(pixel_values=pixels).logits
    assert (found - logits).abs().max() <= 1e-4


@pytest.mark.slow  # an export (~20-60 s)
def test_uint8_in_class_maps_out_equal_segment_from_a_pulled_remote_code_checkpoint(finished_run, images, tmp_path):
    """A folder holding what a push uploads (config.json with auto_map and the model code), loaded as segtune
    loads a Hub id; `--preprocess --labels` make a graph from image pixels to what `segtune.segment` returns."""
    pulled = tmp_path / "pulled"
    pulled.mkdir()
    for name in MODEL_FILES:  # what a push uploads as the model
        shutil.copy2(finished_run / name, pulled / name)
    assert "AutoModelForSemanticSegmentation" in json.loads((pulled / "config.json").read_text())["auto_map"]
    _export(str(pulled), "--preprocess", "--labels", "--output_dir", str(tmp_path / "deploy"))
    description = _description(tmp_path / "deploy")
    assert description["inputs"] == [
        {"name": "pixel_values", "dtype": "uint8", "shape": ["batch", 3, "height", "width"]}
    ]
    assert description["outputs"] == [{"name": "labels", "dtype": "uint8", "shape": ["batch", "height", "width"]}]
    assert description["preprocess"] == {"in_graph": "rescale and normalisation", "resize_before": None}
    assert description["check"]["parity"]["argmax_agreement"] == 1.0 and "skipped" in description["check"]["miou"]
    session = onnxruntime.InferenceSession(str(tmp_path / "deploy" / "model.onnx"), providers=["CPUExecutionProvider"])
    for path, expected in zip(images, segtune.segment(str(finished_run), images)):
        pixels = np.asarray(Image.open(path).convert("RGB")).transpose(2, 0, 1)[None]  # uint8 (1, 3, H, W)
        (labels,) = session.run(None, {"pixel_values": pixels})
        assert labels.dtype == np.uint8
        np.testing.assert_array_equal(labels[0], expected)


@pytest.mark.slow  # an export (~20-60 s) and two evaluations
def test_an_fp16_export_meets_its_targets_on_the_cpu(exported, images, tmp_path):
    run = Path(shutil.copytree(exported[0], tmp_path / "run"))
    _export(str(run), "--half", "--output_dir", str(tmp_path / "half"))
    description = _description(tmp_path / "half")
    assert description["precision"] == "fp16" and description["inputs"][0]["dtype"] == "float16"
    parity, miou = description["check"]["parity"], description["check"]["miou"]
    assert parity["max_abs_logit_diff"] <= 1e-2 and parity["argmax_agreement"] >= 0.999
    assert miou["difference_points"] <= 0.1
    half = segtune.segment(tmp_path / "half", images, backend="onnx")  # fp32 pixels cast to the graph's fp16
    for found, expected in zip(half, segtune.segment(str(run), images)):
        assert (found == expected).mean() >= 0.999


@pytest.mark.slow  # an export (~20-60 s) and two evaluations
def test_a_broken_export_fails_with_both_mious_and_writes_nothing(finished_run, tmp_path, monkeypatch, capsys):
    """ONNX Runtime forced wrong on the evaluation's 64 px images only: parity (other sizes) passes, mIoU does not."""
    _stock_segformer(finished_run, tmp_path / "stock")
    run = onnxruntime.InferenceSession.run

    def wrong_at_64(self, output_names, feed, *args, **kwargs):
        outputs = run(self, output_names, feed, *args, **kwargs)
        return [np.roll(o, 1, axis=1) for o in outputs] if next(iter(feed.values())).shape[-1] == 64 else outputs

    monkeypatch.setattr(onnxruntime.InferenceSession, "run", wrong_at_64)
    target = tmp_path / "out"
    assert (
        main(
            [
                "export",
                str(tmp_path / "stock"),
                "--output_dir",
                str(target),
                "--recipe",
                "demo.yaml",
                "--set",
                *TINY_RUN,
            ]
        )
        == 1
    )
    err = capsys.readouterr().err
    expected, _ = evaluate_checkpoint(str(tmp_path / "stock"), load_recipe("demo.yaml", TINY_RUN))
    assert re.fullmatch(
        rf"error: the export's mIoU differs from PyTorch's: demo validation \(whole\): PyTorch {float(expected['mean_iou']):.4f}, "
        rf"ONNX Runtime 0\.\d{{4}}, \d+\.\d\d points apart \(limit 0\.1\); nothing was written to {re.escape(str(target))}\n",
        err.splitlines(keepends=True)[-1],
    ), err
    assert not target.exists() and [p.name for p in tmp_path.iterdir()] == ["stock"]
