"""GPT-NeoX (Pythia) and Llama (SmolLM2) models in Flax NNX: loading, saving, generation.

    model, tokenizer = load_model("gguf", "SmolLM2-135M-Instruct.Q4_1.gguf")
    model, tokenizer = load_model("hf", "path/to/hf_dir")        # config.json + safetensors
    model, tokenizer = load_model("gptjax", "path/to/saved")     # written by save_model

See docs/models.md.
"""

from __future__ import annotations

import os
from pathlib import Path

from gptjax.models.checkpoint import restore_model, save_model
from gptjax.models.config import ModelConfig, pythia_style
from gptjax.models.generate import Generation, generate, generate_text
from gptjax.models.gguf_loading import load_gguf, load_gguf_model
from gptjax.models.gguf_tokenizer import GGUFTokenizer, load_gguf_tokenizer
from gptjax.models.hf_loading import load_hf_model, save_hf_model
from gptjax.models.losses import per_example_loss
from gptjax.models.tokenizer import Tokenizer, load_tokenizer
from gptjax.models.transformer import Transformer, init_model

SOURCES = ("hf", "gguf", "gptjax")

__all__ = [
    "SOURCES",
    "GGUFTokenizer",
    "Generation",
    "ModelConfig",
    "Tokenizer",
    "Transformer",
    "generate",
    "generate_text",
    "init_model",
    "load_gguf",
    "load_gguf_model",
    "load_gguf_tokenizer",
    "load_hf_model",
    "load_model",
    "load_tokenizer",
    "per_example_loss",
    "pythia_style",
    "restore_model",
    "save_hf_model",
    "save_model",
]


def load_model(
    source: str,
    path: str | os.PathLike,
    tokenizer: str | os.PathLike | None = None,
) -> tuple[Transformer, Tokenizer]:
    """(model, tokenizer) from a local checkpoint; nothing is downloaded.

    source: "hf" (a Hugging Face dir: config.json + safetensors), "gguf" (a llama GGUF file)
    or "gptjax" (a dir written by `save_model`). tokenizer: a tokenizer.json (or a dir with
    one); by default the GGUF's own tokenizer, else a tokenizer.json beside the model, else
    the Pythia tokenizer (gptjax.paths.pythia_tokenizer).
    """
    if source == "gguf" and tokenizer is None:
        return load_gguf(path)
    if source == "hf":
        model = load_hf_model(path)
    elif source == "gguf":
        model = load_gguf_model(path)
    elif source == "gptjax":
        model = restore_model(path)
    else:
        raise ValueError(f"unknown model source {source!r}; expected one of {SOURCES}")
    if tokenizer is None:
        beside = Path(path).expanduser() / "tokenizer.json"
        if beside.is_file():
            tokenizer = beside
        else:
            from gptjax.paths import pythia_tokenizer

            tokenizer = pythia_tokenizer()
    tok = load_tokenizer(tokenizer)
    if tok.vocab_size > model.config.vocab_size:
        raise ValueError(
            f"tokenizer {tokenizer} has {tok.vocab_size} tokens, more than the model's "
            f"vocabulary ({model.config.vocab_size}) from {path}"
        )
    return model, tok
