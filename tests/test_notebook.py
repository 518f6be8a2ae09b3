"""notebooks/colab_tpu.ipynb: committed without outputs, and runs top to bottom on the tiny
config (CPU, no network) in a Jupyter kernel, showing the results table and the influence
query. The parameters are set the papermill way: a cell injected after the one tagged
``parameters``."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from tests.installed import skip_without_models

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

REPO = Path(__file__).resolve().parent.parent
NOTEBOOK = REPO / "notebooks" / "colab_tpu.ipynb"
TINY = REPO / "tests" / "configs" / "tiny.py"
K = 5  # the notebook's default K


def read_notebook():
    return nbformat.read(NOTEBOOK, as_version=4)


def parameters_index(nb) -> int:
    tagged = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{len(tagged)} cells tagged 'parameters'"
    return tagged[0]


def test_committed_notebook_is_stripped():
    nb = read_notebook()
    nbformat.validate(nb)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [], f"cell {i} has outputs"
            assert cell.execution_count is None, f"cell {i} has an execution count"
    source = nb.cells[parameters_index(nb)].source
    for name in ("CONFIG", "WORKDIR", "TINY"):
        assert f"{name} = " in source, name


def text_outputs(nb) -> list[str]:
    """Every text the executed cells showed: streams, results, displays (plain and Markdown)."""
    texts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.output_type == "stream":
                texts.append(out.text)
            elif out.output_type in ("execute_result", "display_data"):
                data = out.get("data", {})
                texts += [data[m] for m in ("text/markdown", "text/plain") if m in data]
    return texts


def one_line(example: dict) -> str:
    """An example's text as the notebook's query tables show it."""
    return " ".join((example["input"] + example["target"]).split()).replace("|", "\\|")


def kernel_for_this_python(root: Path) -> str:
    """A kernel spec that runs this interpreter (the one with gptjax installed) in the folder
    given to JUPYTER_PATH, so that no other installed 'python3' kernel is picked. The kernel
    inherits this process's environment (JAX_PLATFORMS=cpu from conftest.py)."""
    name = "gptjax-test"
    spec = root / "kernels" / name
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    kernel = {"argv": argv, "display_name": name, "language": "python"}
    (spec / "kernel.json").write_text(json.dumps(kernel))
    return name


def test_notebook_runs_on_the_tiny_config(tmp_path, monkeypatch):
    skip_without_models()

    nb = read_notebook()
    workdir = tmp_path / "workdir"
    injected = nbformat.v4.new_code_cell(
        f"CONFIG = {str(TINY)!r}\nWORKDIR = {str(workdir)!r}\nTINY = True",
        metadata={"tags": ["injected-parameters"]},
    )
    nb.cells.insert(parameters_index(nb) + 1, injected)

    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    kernel = kernel_for_this_python(tmp_path / "jupyter")
    client = nbclient.NotebookClient(
        nb,
        kernel_name=kernel,
        timeout=3600,  # a hang guard per cell, not a speed check
        resources={"metadata": {"path": str(REPO)}},  # the kernel's working directory
    )
    client.execute()  # raises CellExecutionError, with the traceback, if a cell fails

    texts = text_outputs(nb)
    shown = "\n".join(texts)
    assert "Colab: False" in shown  # the install cell did nothing here
    assert re.search(r"backend \w+, [1-9]\d* device\(s\):\n  0: \w+", shown)  # jax.devices()

    report = (workdir / "results" / "report.md").read_text()
    tables = [t for t in texts if "| gptfluence |" in t]
    assert tables and report in tables, "the results table is not displayed"
    for method in ("simfluence", "persistence", "mean_trajectory", "tracin_cp_all"):
        assert f"| {method} |" in tables[0], method

    images = [
        out
        for cell in nb.cells
        for out in cell.get("outputs", [])
        if "image/png" in out.get("data", {})
    ]
    assert images, "the trajectory plot is not displayed"

    pools = json.loads((workdir / "data" / "pools.json").read_text())
    query = next(t for t in texts if f"top {K} helpful training examples" in t)
    assert f"top {K} harmful training examples" in query
    assert one_line(pools["test"][0]) in query
    for kind in ("helpful", "harmful"):
        section = query.split(f"top {K} {kind} training examples")[1].split("###")[0]
        rows = [r for r in section.splitlines() if r.startswith("| ") and "---" not in r]
        assert len(rows) == K + 1, section  # the header, then K examples
        for row in rows[1:]:
            pool_id = int(row.split("|")[2].strip().rstrip("*!"))  # the simulator's column
            assert one_line(pools["train"][pool_id]) in row
