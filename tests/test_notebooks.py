"""The notebooks run top to bottom in smoke mode (`SEGTUNE_SMOKE=1`), against a loopback Hub.

The fine-tuning notebook trains a tiny model on synthetic scenes and pushes it. The inference notebook then pulls
that model from the same server and predicts with it. Each notebook runs in a fresh kernel on this interpreter
(`sys.executable`). The kernel's environment points huggingface_hub at the server. The test appends one probe cell,
which prints the notebook's results as JSON.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest
from ipykernel.kernelspec import write_kernel_spec
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient

from tests.hub_fixtures import _UNSET
from tests.hub_server import HubServer

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
NAMES = ("finetune_segformer.ipynb", "inference.ipynb")
COLAB = "https://colab.research.google.com/github/segtune/segtune/blob/main/notebooks"
REPO = "user/segformer-smoke"
CELL_TIMEOUT = 300  # seconds per cell; the whole run takes well under a minute on 2 cores
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

FINETUNE_PROBE = """
import json
print(json.dumps({"output_dir": str(output_dir), "train_steps": [e["step"] for e in train_log],
                  "eval_steps": [e["step"] for e in eval_log], "repo_id": repo_id, "commit_url": commit_url}))
"""
INFERENCE_PROBE = """
import json
print(json.dumps({"repo_id": REPO_ID, "image_sizes": [[image.height, image.width] for image in images],
                  "segtune": [list(mask.shape) for mask in masks], "transformers": [list(m.shape) for m in hf_masks],
                  "classes": sorted({int(c) for mask in masks for c in np.unique(mask)}),
                  "num_labels": config.num_labels,
                  "agreement": float(agreement), "pipeline_labels": [s["label"] for s in segments],
                  "pipeline_sizes": [[s["mask"].height, s["mask"].width] for s in segments]}))
"""


def test_notebooks_are_saved_clean_and_open_in_colab():
    for name in NAMES:
        raw = json.loads((NOTEBOOKS / name).read_text())
        assert raw["nbformat"] == 4, name
        nb = nbformat.reads(json.dumps(raw), as_version=4)
        nbformat.validate(nb)
        code = [cell for cell in nb.cells if cell.cell_type == "code"]
        assert all(cell.outputs == [] and cell.execution_count is None for cell in code), f"{name}: clear its outputs"
        assert nb.metadata.kernelspec.name == "python3"
        assert f"({COLAB}/{name})" in nb.cells[0].source, f"{name}: the first cell's Colab badge"
        install = code[0].source
        assert "SEGTUNE_SMOKE" in install
        assert '%pip install -q "segtune @ git+https://github.com/segtune/segtune"' in install


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubServer]:
    with HubServer(tmp_path_factory.mktemp("hub"), token=f"hf_loopback_{secrets.token_hex(16)}") as server:
        yield server
    assert not server.errors, "the loopback hub failed on a request:\n" + "\n".join(server.errors)


@pytest.fixture(scope="module")
def kernel_env(hub: HubServer, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """This process's environment for the kernels: smoke mode, the loopback Hub, temporary files under the test's
    directory. Settings that would send the clients elsewhere, or make matplotlib draw nowhere, are dropped."""
    root = tmp_path_factory.mktemp("kernel")
    env = {k: v for k, v in os.environ.items() if k not in _UNSET and k != "MPLBACKEND"}
    no_proxy = ",".join(filter(None, [env.get("NO_PROXY") or env.get("no_proxy"), "127.0.0.1,localhost"]))
    env.update(
        SEGTUNE_SMOKE="1",
        SEGTUNE_SMOKE_REPO=REPO,
        HF_ENDPOINT=hub.url,
        HF_TOKEN=hub.token,
        HF_HOME=str(root / "hf_home"),
        HF_HUB_DISABLE_XET="1",
        HF_HUB_OFFLINE="0",
        HF_HUB_DISABLE_TELEMETRY="1",
        NO_PROXY=no_proxy,
        no_proxy=no_proxy,
        TMPDIR=str(root),  # the fine-tuning notebook's output directory (tempfile.mkdtemp)
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
    )
    return env


def execute(name: str, probe: str, env: dict[str, str], workdir: Path) -> tuple[nbformat.NotebookNode, dict[str, Any]]:
    """Run the notebook plus `probe` in a fresh kernel on `sys.executable`; return it executed, and the probe's JSON.

    Raises:
        nbclient.exceptions.CellExecutionError: a cell failed (with its traceback).
    """
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(probe.strip()))
    # A kernelspec of our own: the python3 spec found on the machine may start another interpreter.
    specs = workdir / "kernels"
    write_kernel_spec(specs / "python3")
    manager = AsyncKernelManager(kernel_name="python3", kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(specs)]))
    assert manager.kernel_spec.argv[0] == sys.executable
    client = NotebookClient(
        nb,
        km=manager,
        timeout=CELL_TIMEOUT,
        startup_timeout=120,
        kernel_name="python3",
        resources={"metadata": {"path": str(workdir)}},
    )
    client.execute(env=env)
    printed = "".join(output.get("text", "") for output in nb.cells[-1].outputs if output.output_type == "stream")
    return nb, json.loads(printed.strip().splitlines()[-1])


def tagged(nb: nbformat.NotebookNode, tag: str) -> list[nbformat.NotebookNode]:
    cells = [cell for cell in nb.cells if tag in cell.metadata.get("tags", [])]
    assert cells, f"no cell tagged {tag!r}"
    return cells


def png_outputs(cell: nbformat.NotebookNode) -> list[bytes]:
    return [
        base64.b64decode(output["data"]["image/png"])
        for output in cell.outputs
        if output.output_type in ("display_data", "execute_result") and "image/png" in output.get("data", {})
    ]


def stdout(cell: nbformat.NotebookNode) -> str:
    return "".join(output.get("text", "") for output in cell.outputs if output.get("name") == "stdout")


@pytest.fixture(scope="module")
def finetune(hub, kernel_env, tmp_path_factory) -> tuple[nbformat.NotebookNode, dict[str, Any]]:
    return execute("finetune_segformer.ipynb", FINETUNE_PROBE, kernel_env, tmp_path_factory.mktemp("finetune"))


@pytest.fixture(scope="module")
def inference(finetune, kernel_env, tmp_path_factory) -> tuple[nbformat.NotebookNode, dict[str, Any]]:
    """Runs after the fine-tuning notebook has pushed the model it pulls."""
    return execute("inference.ipynb", INFERENCE_PROBE, kernel_env, tmp_path_factory.mktemp("inference"))


@pytest.mark.slow
def test_finetune_notebook_trains_plots_and_pushes(finetune, hub):
    nb, result = finetune
    output_dir = Path(result["output_dir"])
    assert result["train_steps"] == [1, 2, 3, 4] and result["eval_steps"] == [2, 4]  # the smoke run, fully logged
    [curve] = tagged(nb, "training-curve")
    [image] = png_outputs(curve)
    assert image.startswith(PNG_SIGNATURE)
    [table] = tagged(nb, "per-class-iou")
    assert stdout(table).strip() == (output_dir / "per_class_iou.md").read_text().strip()
    assert "background" in stdout(table)
    [grid] = tagged(nb, "predictions")
    assert png_outputs(grid) == [(output_dir / "predictions.png").read_bytes()]

    assert result["repo_id"] == REPO and result["commit_url"].startswith(hub.url)
    files = hub.resolve(hub.repo(REPO), "main").files
    assert {"model.safetensors", "config.json", "README.md"} <= set(files)
    assert hub.stored_file(REPO, "model.safetensors").read_bytes() == (output_dir / "model.safetensors").read_bytes()
    assert REPO in hub.stored_file(REPO, "README.md").read_text()


@pytest.mark.slow
def test_inference_notebook_pulls_the_pushed_model_and_predicts(inference, hub):
    nb, result = inference
    assert result["repo_id"] == REPO
    assert any(
        request.method == "GET"
        and request.path.startswith(f"/{REPO}/resolve/")
        and request.path.endswith("/model.safetensors")
        for request in hub.requests
    )
    sizes = result["image_sizes"]
    assert sizes == [[64, 96], [80, 72]]  # (height, width): two sizes, so the masks must follow each image
    assert result["segtune"] == sizes and result["transformers"] == sizes
    assert all(0 <= c < result["num_labels"] for c in result["classes"])
    assert result["agreement"] >= 0.99  # the same model, through segtune and through plain transformers
    assert result["pipeline_sizes"] == [sizes[0]] * len(result["pipeline_labels"]) and result["pipeline_labels"]
    for cell in tagged(nb, "overlays") + tagged(nb, "pipeline"):
        [image] = png_outputs(cell)
        assert image.startswith(PNG_SIGNATURE)
