"""The layering contract in setup.cfg holds: the pipeline over the methods over the library."""

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def test_import_layers_contract_is_kept(monkeypatch):
    cli = pytest.importorskip("importlinter.cli")
    monkeypatch.chdir(REPO)
    code = cli.lint_imports(config_filename=str(REPO / "setup.cfg"), no_cache=True, no_logo=True)
    assert code == 0, "lint-imports: a module imports a layer above it (run `lint-imports`)"


def test_no_sys_path_edits_outside_tests():
    for folder in ("gptjax", "simulator", "baselines", "benchmarks", "configs"):
        for path in (REPO / folder).rglob("*.py"):
            text = path.read_text()
            assert "sys.path" not in text, f"{path.relative_to(REPO)} edits sys.path"
    assert os.path.isfile(REPO / "benchmarks" / "__init__.py")
