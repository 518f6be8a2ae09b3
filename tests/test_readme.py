"""README.md is assembled from docs/ (python docs/build_readme.py); it must be up to date."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_readme_is_built_from_docs():
    spec = importlib.util.spec_from_file_location("build_readme", ROOT / "docs" / "build_readme.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert (ROOT / "README.md").read_text() == module.build(), "run python docs/build_readme.py"


def test_readme_opens_with_the_two_commands():
    text = (ROOT / "README.md").read_text()
    blocks = text.split("```bash\n")[1:3]
    assert "python -m gptjax.main --config configs/demo.py" in blocks[0]
    assert "python -m pytest" in blocks[1]
    test_command = blocks[1].split("```")[0].strip()
    assert test_command in (ROOT / ".ci" / "run").read_text().splitlines()
