"""Every lesson runs top to bottom on a CPU, within the time a lesson may take, and ends with exercises."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

LESSONS = Path(__file__).resolve().parents[1] / "lessons"
NOTEBOOKS = sorted(LESSONS.glob("[0-9][0-9]_*.ipynb"))
BUDGET_S = 120  # the guide's limit for one lesson on a CPU


def test_lessons_exist_and_are_numbered_in_order():
    assert NOTEBOOKS, "no lessons found"
    numbers = [int(p.name[:2]) for p in NOTEBOOKS]
    assert numbers == list(range(1, len(numbers) + 1))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_lesson_runs_top_to_bottom(path):
    nb = nbformat.read(path, as_version=4)
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")
    last = nb.cells[-1]
    assert last.cell_type == "markdown" and "## Exercises" in last.source
    start = time.perf_counter()
    # executes in lessons/, as JupyterLab does; a failing cell raises CellExecutionError naming the cell
    nbclient.NotebookClient(nb, timeout=BUDGET_S, kernel_name="python3",
                            resources={"metadata": {"path": str(LESSONS)}}).execute()
    assert time.perf_counter() - start < BUDGET_S
