"""The notebooks in notebooks/ and the analysis scripts in analysis/ run end to end without an error.

Each is executed in a fresh ``python3`` kernel with nbclient, from
``notebooks/`` (their relative paths start there), with ``LBSIM_QUICK=1`` so
that every run in them is small: all five take well under two minutes on two
cores. A failing cell fails the test with the cell's traceback. The analysis
scripts that regenerate the README's results run the same way in their
``--quick`` mode (``python analysis/make_all.py --quick``, under a minute or
two). Not marked slow and never skipped: CI runs them with the rest.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
#: seconds one cell may take in quick mode (a stuck kernel fails instead of hanging CI)
CELL_TIMEOUT = 240


def notebooks() -> list[Path]:
    return sorted(NOTEBOOKS.glob("*.ipynb"))


def test_the_notebooks_are_there_without_outputs():
    names = {p.stem for p in notebooks()}
    assert {"quickstart", "tail_latency", "network_latency", "fluid_limit", "dgdlb_stability", "llm_serving"} <= names
    for path in notebooks():
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert code and all(not c.outputs and c.execution_count is None for c in code), f"{path.name} has outputs"
        assert any("LBSIM_QUICK" in c.source for c in code), f"{path.name} ignores LBSIM_QUICK"


@pytest.mark.parametrize("path", notebooks(), ids=lambda p: p.stem)
def test_notebook_runs(path: Path, monkeypatch):
    monkeypatch.setenv("LBSIM_QUICK", "1")  # the kernel inherits this process's environment
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb,
        timeout=CELL_TIMEOUT,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOKS)}},
    )
    started = time.perf_counter()
    try:
        client.execute()
    except CellExecutionError as exc:
        pytest.fail(f"{path.name}: a cell failed\n{exc}")
    elapsed = time.perf_counter() - started
    print(f"{path.name}: {elapsed:.1f} s")
    # every code cell ran
    assert all(c.execution_count is not None for c in nb.cells if c.cell_type == "code")
    assert os.environ["LBSIM_QUICK"] == "1"


def test_analysis_quick_mode_writes_every_result(tmp_path):
    done = subprocess.run(
        [sys.executable, str(ROOT / "analysis" / "make_all.py"), "--quick", "--workers", "1", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "MPLBACKEND": "Agg"},
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = (tmp_path / "results.md").read_text()
    sys.path.insert(0, str(ROOT / "analysis"))
    try:
        from make_all import SCRIPTS
    finally:
        sys.path.remove(str(ROOT / "analysis"))
    assert report.count("\n## ") == len(SCRIPTS)
    figures = [line.split("(")[-1].rstrip(")") for line in report.splitlines() if line.startswith("![")]
    assert len(figures) >= 2 * len(SCRIPTS)
    for name in figures:
        assert (tmp_path / name).stat().st_size > 5000, name
