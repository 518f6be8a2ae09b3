"""The README example in docs/simulator.md runs as written."""

import re
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "simulator.md"


def test_docs_example_runs(tmp_path, capsys):
    code = re.search(r"```python\n(.*?)```", DOC.read_text(), re.S).group(1)
    code = code.replace("/tmp/gptfluence_example", str(tmp_path / "sim"))
    exec(compile(code, str(DOC), "exec"), {"__name__": "docs_example"})
    out = capsys.readouterr().out
    assert "| gptfluence |" in out and "most suspicious examples" in out
