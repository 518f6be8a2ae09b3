"""Skips for tests that need the locally installed tokenizer and encoder (never downloaded)."""

from __future__ import annotations

import pytest

from gptjax import paths


def skip_without_models() -> None:
    """Skip the calling test unless the Pythia tokenizer and all-MiniLM-L6-v2 are installed."""
    if not paths.pythia_tokenizer().is_file():
        pytest.skip("the Pythia tokenizer is not installed")
    try:
        paths.minilm_dir()
    except FileNotFoundError:
        pytest.skip("all-MiniLM-L6-v2 is not installed")
