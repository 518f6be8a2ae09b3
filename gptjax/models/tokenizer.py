"""A small tokenizer facade over Hugging Face `tokenizers`, loaded from local files only."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import tokenizers


@dataclass
class Tokenizer:
    """Wraps a `tokenizers.Tokenizer`; ids are plain Python ints.

    ``eos_id`` ends generation and separates documents; ``pad_id`` fills padded positions
    (it is never attended to or scored, so reusing EOS is fine).
    """

    backend: tokenizers.Tokenizer
    eos_id: int
    pad_id: int
    bos_id: int | None = None

    def encode(self, text: str) -> list[int]:
        return self.backend.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.backend.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return self.backend.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)


def _find_token(backend: tokenizers.Tokenizer, candidates: list[str]) -> int | None:
    for token in candidates:
        idx = backend.token_to_id(token)
        if idx is not None:
            return idx
    return None


def load_tokenizer(path: str | os.PathLike) -> Tokenizer:
    """Load a tokenizer from a `tokenizer.json` file or a directory holding one.

    Never touches a hub: a path that does not exist is an error naming it.
    """
    path = Path(path).expanduser()
    file = path / "tokenizer.json" if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(
            f"tokenizer not found: {file} (expected a Hugging Face tokenizer.json, "
            "or a directory that contains one)"
        )
    try:
        backend = tokenizers.Tokenizer.from_file(str(file))
    except Exception as err:  # tokenizers raises a bare Exception on malformed JSON
        raise ValueError(f"malformed tokenizer file {file}: {err}") from err
    eos = _find_token(backend, ["<|endoftext|>", "</s>", "<|im_end|>", "<eos>", "[SEP]"])
    if eos is None:
        raise ValueError(f"{file}: no end-of-sequence token found")
    bos = _find_token(backend, ["<s>", "<|im_start|>", "<bos>"])
    pad = _find_token(backend, ["<|padding|>", "<pad>", "[PAD]"])
    return Tokenizer(backend=backend, eos_id=eos, pad_id=eos if pad is None else pad, bos_id=bos)
