"""The notebooks run top to bottom (small settings, KERAS_VAE_FAST=1) so they cannot rot.

Each notebook asserts its own results in its cells (e.g. ONNX vs Keras parity, an AUROC above
chance), so a notebook that runs but computes the wrong thing fails here too."""

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


def test_all_expected_notebooks_exist():
    assert {p.name for p in NOTEBOOKS} >= {"quickstart.ipynb", "anomaly_detection.ipynb",
                                           "pretrained.ipynb"}


@pytest.mark.large
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path, tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_VAE_FAST", "1")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO),
                                                                    os.environ.get("PYTHONPATH")])))
    # No zoo settings, as on a fresh clone: the packaged presets and the checkout's weights/
    # serve the models; offline mode makes any attempt to use the network fail loudly.
    monkeypatch.delenv("KERAS_VAE_WEIGHTS_URL", raising=False)
    monkeypatch.setenv("KERAS_VAE_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))      # a cold cache
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "3")
    notebook = nbformat.read(path, as_version=4)
    for cell in notebook.cells:
        assert cell.get("outputs", []) == [], f"{path.name}: commit notebooks with outputs stripped"
    NotebookClient(notebook, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
