"""The notebooks: committed with their outputs, and executed top to bottom so they never rot."""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
import pytest

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
sys.path.insert(0, str(NOTEBOOK_DIR))
import execute  # noqa: E402  (notebooks/execute.py: the script that saves the outputs)

NOTEBOOKS = execute.notebooks()
# the notebooks whose point is a picture: their committed outputs must hold one
PLOTS = {"03_what_the_layers_see", "04_zoo_report", "05_sweeps"}


def _code_cells(nb: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    return [c for c in nb.cells if c.cell_type == "code"]


def _images(nb: nbformat.NotebookNode) -> int:
    return sum("image/png" in o.get("data", {}) for c in _code_cells(nb) for o in c.outputs)


def test_every_planned_notebook_is_there() -> None:
    stems = {p.stem for p in NOTEBOOKS}
    assert {"01_quickstart", "02_paper_details"} | PLOTS <= stems


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_committed_with_its_outputs(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    cells = _code_cells(nb)
    unexecuted = [i for i, c in enumerate(cells) if c.execution_count is None]
    assert not unexecuted, (f"code cells {unexecuted} of {path.name} have no outputs: "
                            f"run `python notebooks/execute.py {path.stem}`")
    # executed in order, in one go (not cell by cell by hand)
    assert [c.execution_count for c in cells] == list(range(1, len(cells) + 1))
    errors = [o for c in cells for o in c.outputs if o.get("output_type") == "error"]
    assert not errors
    if path.stem in PLOTS:
        assert _images(nb) > 0, f"{path.name} shows no plot"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path: Path, tmp_path: Path) -> None:
    nb = execute.execute(path, tmp_path)  # raises CellExecutionError naming the failing cell
    cells = _code_cells(nb)
    assert all(c.execution_count is not None for c in cells)
    if path.stem in PLOTS:
        assert _images(nb) > 0
