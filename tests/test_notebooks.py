"""Executes every notebook in colab/ (small sizes, CPU): they must run top to bottom."""
from pathlib import Path

import pytest

COLAB = Path(__file__).resolve().parents[1] / "colab"
NOTEBOOKS = sorted(COLAB.glob("*.ipynb"))
# notebooks that draw the architecture they found (jaxnas.report.draw / draw_result)
DRAWN = {"quickstart.ipynb", "advantagenas.ipynb", "manas.ipynb", "tabnas.ipynb", "ma2ml.ipynb"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("JAXNAS_NOTEBOOK_STEPS", "600")
    nb = nbformat.read(path, as_version=4)
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(COLAB)}}).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors, errors
    if path.name in DRAWN:       # the drawing is shown: an image output of a cell that draws
        shown = [c for c in nb.cells if c.cell_type == "code" and "draw" in c.source
                 and any("image/png" in o.get("data", {}) for o in c.get("outputs", []))]
        assert shown, f"{path.name}: no drawn architecture among the outputs"
